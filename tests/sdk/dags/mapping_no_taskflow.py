"""Equivalent of Airflow's example_dynamic_task_mapping_with_no_taskflow_operators.py
(our own code, same results): classic operators only."""

from datetime import datetime

from airflow.sdk import (
    DAG,
    BaseOperator,
)


class AddOneOperator(BaseOperator):
    """Adds one to its input."""

    def __init__(self, value, **kwargs):
        super().__init__(**kwargs)
        self.value = value

    def execute(self, context):
        return self.value + 1


class SumItOperator(BaseOperator):
    """Sums its input (a templated field, so an upstream's output resolves into it)."""

    template_fields = ("values",)

    def __init__(self, values, **kwargs):
        super().__init__(**kwargs)
        self.values = values

    def execute(self, context):
        total = sum(self.values)
        print(f"Total was {total}")
        return total


class ListOperator(BaseOperator):
    """Returns a list (something to map over)."""

    def __init__(self, values, **kwargs):
        super().__init__(**kwargs)
        self.values = values

    def execute(self, context):
        return list(self.values)


with DAG(dag_id="mapping_no_taskflow", schedule=None, start_date=datetime(2022, 3, 4), catchup=False):
    add_one_task = AddOneOperator.partial(task_id="add_one").expand(value=[1, 2, 3])
    sum_it_task = SumItOperator(task_id="sum_it", values=add_one_task.output)

with DAG(dag_id="mapping_no_taskflow_from_upstream", schedule=None, start_date=datetime(2022, 3, 4),
         catchup=False):
    numbers = ListOperator(task_id="numbers", values=[1, 2, 3])
    add_one = AddOneOperator.partial(task_id="add_one").expand(value=numbers.output)
    add_one_again = AddOneOperator.partial(task_id="add_one_again").expand(value=add_one.output)
    SumItOperator(task_id="sum_first", values=add_one.output)
    SumItOperator(task_id="sum_second", values=add_one_again.output)
