"""Equivalent of Airflow's example_dynamic_task_mapping.py (our own code, same results):
map over a literal list and reduce; map over a mapped task (second order)."""

from datetime import datetime

from airflow.sdk import (
    DAG,
    task,
)

with DAG(dag_id="dynamic_task_mapping", schedule=None, start_date=datetime(2022, 3, 4), catchup=False):

    @task
    def add_one(x: int):
        return x + 1

    @task
    def sum_it(values):
        total = sum(values)
        print(f"Total was {total}")
        return total

    added_values = add_one.expand(x=[1, 2, 3])
    sum_it(added_values)

with DAG(dag_id="dynamic_task_mapping_second_order", schedule=None, start_date=datetime(2022, 3, 4),
         catchup=False):

    @task
    def add_one(x: int):
        return x + 1

    @task
    def sum_it(values):
        return sum(values)

    sum_it(add_one.expand(x=add_one.expand(x=[1, 2, 3])))

with DAG(dag_id="dynamic_task_mapping_from_upstream", schedule=None, start_date=datetime(2022, 3, 4),
         catchup=False):

    @task
    def get_nums():
        return [1, 2, 3]

    @task
    def times_2(num):
        return num * 2

    @task
    def add_10(num):
        return num + 10

    add_10.expand(num=times_2.expand(num=get_nums()))
