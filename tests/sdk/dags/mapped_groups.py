"""Mapped task groups: every task expands with its group, over literals or an upstream output,
with partial values, expand_kwargs, a plain group inside a mapped one, and edges added after the
group was built (after tests/unit/test_mapped_groups.py)."""

from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import (
    dag,
    task,
    task_group,
)


@task
def make():
    return [1, 2, 3]


@task
def inc(x, y=0):
    return x + y


@task
def collect(values):
    return list(values)


@task_group
def grp(x, y=2):
    return inc(inc(x), y)


@task_group
def shell(x):
    BashOperator(task_id="echo", bash_command=x)


@task_group
def outer(x):
    @task_group
    def inner(z):
        return inc(z)

    return inner(x)


@dag(dag_id="mapped_groups", schedule=None, start_date=datetime(2026, 1, 1))
def mapped_groups():
    collect(grp.partial(y=5).expand(x=make()))
    grp.expand(x=[1, 2], y=[3, 4, 5])
    grp.expand_kwargs([{"x": 1}, {"x": 2, "y": 7}])
    grp.expand_kwargs(make.override(task_id="kw")().map(lambda n: {"x": n}))
    out = grp.expand(x=[1])
    out >> EmptyOperator(task_id="after")
    shell.expand(x=["echo a", "echo b"])
    outer.expand(x=[1, 2])


mapped_groups()
