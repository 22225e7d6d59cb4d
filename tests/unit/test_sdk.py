"""The authoring API: DAG building, TaskFlow ids, default_args, dependencies."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from shared.sdk import DAG, BashOperator, EmptyOperator, PythonOperator, TaskGroup, chain, dag, task
from shared.sdk.exceptions import DuplicateTaskIdFound, TaskDeferred
from shared.serialization import serialize_dag


def test_default_args_fill_operator_arguments_and_explicit_wins():
    with DAG("d", default_args={"retries": 3, "retry_delay": timedelta(seconds=9), "queue": "q"}) as d:
        a = EmptyOperator(task_id="a")
        b = PythonOperator(task_id="b", python_callable=print, retries=1)
    assert (a.retries, a.retry_delay, a.queue) == (3, timedelta(seconds=9), "q")
    assert b.retries == 1
    assert d.task_ids == ["a", "b"]


def test_taskflow_ids_are_unique_and_values_wire_dependencies():
    @dag(start_date=datetime(2026, 1, 1))
    def flow():
        @task
        def one():
            return 1

        @task
        def add(x, y):
            return x + y

        add(one(), one())

    d = flow()
    assert sorted(d.task_ids) == ["add", "one", "one__1"]
    assert d.get_task("add").upstream_task_ids == {"one", "one__1"}


def test_chain_groups_and_bitshift():
    with DAG("d") as d:
        start = EmptyOperator(task_id="start")
        with TaskGroup("grp") as grp:
            x = EmptyOperator(task_id="x")
            y = EmptyOperator(task_id="y")
            x >> y
        end = BashOperator(task_id="end", bash_command="echo hi")
        chain(start, grp, end)
    assert x.task_id == "grp.x"
    assert d.get_task("grp.x").upstream_task_ids == {"start"}
    assert d.get_task("end").upstream_task_ids == {"grp.y"}


def test_duplicate_task_id_and_bad_arguments_are_refused():
    with DAG("d"):
        EmptyOperator(task_id="a")
        with pytest.raises(DuplicateTaskIdFound):
            EmptyOperator(task_id="a")
        with pytest.raises(TypeError, match="Invalid arguments were passed to EmptyOperator"):
            EmptyOperator(task_id="b", not_an_arg=1)
        with pytest.raises(ValueError, match="trigger_rule"):
            EmptyOperator(task_id="c", trigger_rule="sometimes")


def test_task_deferred_is_not_an_exception():
    assert not issubclass(TaskDeferred, Exception)


def test_serialized_dag_carries_scheduling_facts():
    with DAG("d", schedule="@daily", start_date=datetime(2026, 1, 1), max_active_runs=2) as d:
        a = PythonOperator(task_id="a", python_callable=print, retries=2,
                           retry_exponential_backoff=True, pool_slots=2, priority_weight=5)
        b = EmptyOperator(task_id="b")
        a >> b
    out = serialize_dag(d)
    assert out["schedule"] == {"kind": "cron", "expr": "@daily"}
    assert out["max_active_runs"] == 2
    ta, tb = out["tasks"]
    assert (ta["retries"], ta["retry_backoff"], ta["pool_slots"], ta["priority_weight"]) == (2, 2.0, 2, 6)
    assert tb["is_empty"] and tb["upstream"] == ["a"]


def test_unsupported_task_decorators_say_so():
    from shared.sdk import task

    for name in ("branch", "short_circuit", "virtualenv", "sensor"):
        with pytest.raises(AttributeError, match=rf"@task.{name} is not supported by Sluice"):
            getattr(task, name)
