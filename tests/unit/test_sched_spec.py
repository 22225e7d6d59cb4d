"""What the scheduler knows of an ``airflow.sdk`` DAG: the facts it decides from.

Airflow builds the DAG (default_args, TaskFlow ids, groups, ``chain``); Sluice's
spec walk reads what scheduling needs from it, as the parse server stores it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, TaskGroup, chain, dag, task

from shared.airflow_spec import dag_spec


def tasks_of(d) -> dict[str, dict]:
    return {t["task_id"]: t for t in dag_spec(d)["tasks"]}


def test_the_spec_carries_scheduling_facts_with_default_args_under_explicit_values():
    with DAG("d", schedule="@daily", start_date=datetime(2026, 1, 1), max_active_runs=2,
             default_args={"retries": 3, "retry_delay": timedelta(seconds=9), "queue": "q"}) as d:
        a = PythonOperator(task_id="a", python_callable=print, retries=2,
                           retry_exponential_backoff=True, max_retry_delay=timedelta(minutes=5),
                           pool_slots=2, priority_weight=5)
        b = EmptyOperator(task_id="b")
        c = PythonOperator(task_id="c", python_callable=print, retry_exponential_backoff=3,
                           trigger_rule="none_failed")
        a >> b >> c
    spec = dag_spec(d)
    # a preset builds Airflow 3.3's CronTriggerTimetable, stored as Airflow encodes it
    assert spec["schedule"]["timetable"] == {
        "__type": "airflow.timetables.trigger.CronTriggerTimetable",
        "__var": {"expression": "0 0 * * *", "timezone": "UTC", "interval": 0.0,
                  "run_immediately": False}}
    assert (spec["schedule"]["summary"], spec["max_active_runs"]) == ("0 0 * * *", 2)
    ta, tb, tc = spec["tasks"]
    # True is Airflow's 2.0 multiplier (as its scheduler deserializes it)
    assert (ta["retries"], ta["retry_delay_s"], ta["retry_backoff"], ta["max_retry_delay_s"],
            ta["queue"], ta["pool_slots"], ta["priority_weight"]) == (2, 9.0, 2.0, 300.0, "q", 2, 7)
    assert (tb["retries"], tb["retry_backoff"], tb["is_empty"], tb["upstream"], tb["priority_weight"]) \
        == (3, 0.0, True, ["a"], 2)
    assert (tc["retry_backoff"], tc["trigger_rule"], ta["is_empty"]) == (3.0, "none_failed", False)


def test_taskflow_ids_groups_and_chain_are_the_edges_the_scheduler_follows():
    @dag(schedule=None, start_date=datetime(2026, 1, 1))
    def flow():
        @task
        def one():
            return 1

        @task
        def add(x, y):
            return x + y

        start = EmptyOperator(task_id="start")
        with TaskGroup("grp") as grp:
            x = EmptyOperator(task_id="x")
            y = EmptyOperator(task_id="y")
            x >> y
        end = BashOperator(task_id="end", bash_command="echo hi")
        chain(start, grp, end, add(one(), one()))

    tasks = tasks_of(flow())
    assert sorted(tasks) == ["add", "end", "grp.x", "grp.y", "one", "one__1", "start"]
    assert tasks["add"]["upstream"] == ["end", "one", "one__1"]
    assert (tasks["grp.x"]["upstream"], tasks["grp.x"]["group_id"]) == (["start"], "grp")
    assert tasks["end"]["upstream"] == ["grp.y"]
    assert tasks["start"]["group_id"] is None
