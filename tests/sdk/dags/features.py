"""TaskFlow, classic operators with partial/expand, trigger rules, task groups, a sensor."""

from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import (
    BaseOperator,
    BaseSensorOperator,
    PokeReturnValue,
    TaskGroup,
    TriggerRule,
    dag,
    get_current_context,
    task,
    task_group,
)
from airflow.sdk.exceptions import AirflowSkipException


def multiply(x, factor):
    return x * factor


class DoubleOperator(BaseOperator):
    template_fields = ("value",)

    def __init__(self, *, value, **kwargs):
        super().__init__(**kwargs)
        self.value = value

    def execute(self, context):
        return self.value * 2


class ReadySensor(BaseSensorOperator):
    def poke(self, context):
        return PokeReturnValue(is_done=True, xcom_value={"ready": context["ti"].task_id})


@dag(dag_id="features", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     default_args={"retry_delay": timedelta(seconds=0)}, tags=["airflow-compat"])
def features():
    # --- TaskFlow ----------------------------------------------------------
    @task
    def extract():
        return {"a": 1, "b": 2, "c": 3}

    @task(multiple_outputs=True)
    def transform(data):
        return {"total": sum(data.values()), "keys": sorted(data)}

    @task
    def load(total, keys):
        return f"{total}:{'-'.join(keys)}"

    summary = transform(extract())
    load(summary["total"], summary["keys"])

    # --- classic operators, partial/expand/expand_kwargs, XComArg.map -------
    @task
    def numbers():
        return [1, 2, 3]

    nums = numbers()
    products = PythonOperator.partial(
        task_id="multiply", python_callable=multiply, op_kwargs={"factor": 10},
    ).expand(op_args=[[1], [2], [3]])
    doubled = DoubleOperator.partial(task_id="double").expand(value=nums)
    squares = PythonOperator.partial(task_id="square", python_callable=multiply).expand_kwargs(
        nums.map(lambda n: {"op_args": [n], "op_kwargs": {"factor": n}}))
    BashOperator.partial(task_id="echo").expand(
        bash_command=["echo {{ task.task_id }}-{{ ti.map_index }}", "echo second"])

    @task
    def reduce(doubled_values, products_values, squares_values):
        return {"doubled": sum(doubled_values), "products": list(products_values),
                "squares": list(squares_values)}

    reduce(doubled.output, products.output, squares.output)

    # --- trigger rules, skips, retries --------------------------------------
    @task
    def skip_me():
        raise AirflowSkipException("nothing to do")

    @task(retries=1)
    def flaky():
        if get_current_context()["ti"].try_number < 2:
            raise RuntimeError("the first try fails")
        return "second try"

    @task
    def broken():
        raise ValueError("always fails")

    @task
    def after_skip():
        return "not reached"

    @task(trigger_rule=TriggerRule.ALL_SKIPPED)
    def only_when_skipped():
        return "all upstreams skipped"

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def join():
        return "joined"

    @task(trigger_rule=TriggerRule.NONE_SKIPPED)
    def no_skips():
        return "not reached"

    @task
    def after_broken():
        return "not reached"

    @task(trigger_rule=TriggerRule.ONE_FAILED)
    def alert():
        return "one failed"

    @task(trigger_rule="all_done")
    def cleanup():
        return "all done"

    skipped, retried, failed = skip_me(), flaky(), broken()
    skipped >> after_skip()
    skipped >> only_when_skipped()
    [skipped, retried] >> join()
    [skipped, retried] >> no_skips()
    never = after_broken()
    failed >> never
    [retried, failed] >> alert()
    [never, skipped] >> cleanup()

    # --- task groups (classic and decorated) and a sensor -------------------
    ready = ReadySensor(task_id="ready", poke_interval=1, timeout=30)

    with TaskGroup("prepare", tooltip="classic group", default_args={"retries": 2}) as prepare:
        start = EmptyOperator(task_id="start")
        answer = DoubleOperator(task_id="answer", value=21)
        where = BashOperator(task_id="where", bash_command="echo {{ task.task_id }}")
        start >> [answer, where]

    ready >> prepare

    @task_group(group_id="compute")
    def compute(n):
        @task
        def inc(x):
            return x + 1

        @task
        def square_it(x):
            return x * x

        return square_it(inc(n))

    @task
    def finish(value):
        return value + 1

    finish(compute(answer.output))


features()
