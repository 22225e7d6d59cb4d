"""Mapping inputs the scheduler reads lengths from: literals, dicts, cross products,
expand_kwargs, upstream outputs through .map/.zip/.concat, partial values, mapped over mapped
(after tests/unit/test_mapping_expansion.py)."""

from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import (
    dag,
    task,
)


@task
def gen():
    return [1, 2, 3]


@task
def gen2():
    return [1, 2]


@task
def show(a, b=None):
    return [a, b]


def multiply(x, factor):
    return x * factor


@dag(dag_id="mapping_variants", schedule=None, start_date=datetime(2026, 1, 1))
def mapping_variants():
    nums, two = gen(), gen2()
    show.partial(b=1).expand(a=nums)
    show.expand(a=[1, 2, 3], b={"x": 1, "y": 2})
    show.expand_kwargs([{"a": 1}, {"a": 2}])
    show.expand_kwargs([{"a": 1}, {"a": two}])
    show.expand_kwargs(gen.override(task_id="kwargs_source")())
    show.expand(a=[])
    show.expand(a=[1, 2], b=two)
    show.expand(a=nums.zip(nums, fillvalue=0).map(str).concat(nums))
    show.expand(a=nums.zip(two))
    show.expand(a=nums.concat(two).map(str))
    show.expand(a=nums.map(str).zip(two.concat(nums)), b=[0, 1])
    show.expand(a=show.expand(a=[1, 2, 3, 4]))
    show.override(trigger_rule="all_done").expand(a=show.expand(a=[1, 2]))
    show.override(task_id="knobs", retries=3, retry_delay=timedelta(seconds=5),
                  retry_exponential_backoff=True, max_retry_delay=timedelta(minutes=1),
                  pool="small", pool_slots=2, queue="gpu", priority_weight=3,
                  max_active_tis_per_dag=2, max_active_tis_per_dagrun=1,
                  execution_timeout=timedelta(seconds=30)).expand(a=[1])
    PythonOperator.partial(task_id="classic", python_callable=print).expand(op_args=[[1], [2]])
    PythonOperator.partial(task_id="square", python_callable=multiply).expand_kwargs(
        nums.map(lambda n: {"op_args": [n], "op_kwargs": {"factor": n}}))
    BashOperator.partial(task_id="bash", retries=2, pool="small", queue="io").expand_kwargs(
        two.map(lambda n: {"bash_command": f"echo {n}"}))
    BashOperator.partial(task_id="bash_literal", env={"A": "1"}).expand(
        bash_command=["echo 1", "echo 2"], cwd=["/tmp"])


mapping_variants()
