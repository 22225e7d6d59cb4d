"""Scheduled runs on Sluice's real daemons, with Airflow 3.3's timetable semantics.

A scheduler and a worker run as processes over DAG files written here. Each
DAG's task returns what the Task SDK's context says of its run (logical date,
data interval, run id, ``ds``); the test reads the runs the scheduler created
and those return values:

* ``timedelta(seconds=5)`` (a ``DeltaTriggerTimetable``, ``catchup=False``): runs
  follow each other every 5 s exactly once the scheduler keeps up, each at its own moment (logical date =
  data interval start = end = run_after), ``run_id`` ``scheduled__<run_after>``;
* ``* * * * *`` (a ``CronTriggerTimetable``): the latest minute tick runs at once;
* ``@continuous``: one run at a time, each covering from where the last ended;
* ``@daily`` as a ``CronDataIntervalTimetable`` with ``catchup=True`` from two
  days ago: the two complete days, each covering its day and run at its end.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from tests.cluster import wait_for

pytestmark = pytest.mark.timeout(900)

CONTEXT_TASK = '''
from datetime import datetime, timedelta

import pendulum
from airflow.sdk import DAG, task, get_current_context
from airflow.sdk.definitions.timetables.interval import CronDataIntervalTimetable


@task
def facts():
    ctx = get_current_context()
    return {"logical_date": ctx["logical_date"].isoformat(),
            "data_interval_start": ctx["data_interval_start"].isoformat(),
            "data_interval_end": ctx["data_interval_end"].isoformat(),
            "run_id": ctx["run_id"], "ds": ctx["ds"]}


with DAG("every_5s", schedule=timedelta(seconds=5), start_date=datetime(2026, 1, 1),
         catchup=False, is_paused_upon_creation=False):
    facts()

with DAG("every_minute", schedule="* * * * *", start_date=datetime(2026, 1, 1),
         is_paused_upon_creation=False):
    facts()

with DAG("continuous", schedule="@continuous", start_date=datetime(2026, 1, 1),
         max_active_runs=1, is_paused_upon_creation=False):
    facts()

with DAG("daily_intervals", schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
         start_date=pendulum.today("UTC").subtract(days=2), catchup=True,
         is_paused_upon_creation=False):
    facts()
'''


async def scheduled_runs(cluster, dag_id: str) -> list[dict]:
    conn = await cluster.connect()
    try:
        rows = await conn.fetch(
            "SELECT r.run_id, r.logical_date, r.data_interval_start, r.data_interval_end, "
            "r.state, x.value::text AS facts FROM dag_run r LEFT JOIN xcom x "
            "ON x.run_pk = r.id AND x.task_id = 'facts' AND x.map_index = -1 "
            "AND x.key = 'return_value' WHERE r.dag_id = $1 AND r.run_type = 'scheduled' "
            "ORDER BY r.logical_date", dag_id)
    finally:
        await conn.close()
    return [dict(r) for r in rows]


def settled(runs: list[dict], n: int) -> list[dict] | None:
    done = [r for r in runs if r["state"] == "success" and r["facts"] is not None]
    return done[:n] if len(done) >= n else None


def facts_of(run: dict) -> dict:
    value = run["facts"]
    return json.loads(value) if isinstance(value, str) else value


def assert_context_is_the_run(run: dict) -> None:
    """The task's context says what the run row says, as the Task SDK renders it."""
    facts = facts_of(run)
    assert datetime.fromisoformat(facts["logical_date"]) == run["logical_date"]
    assert datetime.fromisoformat(facts["data_interval_start"]) == run["data_interval_start"]
    assert datetime.fromisoformat(facts["data_interval_end"]) == run["data_interval_end"]
    assert facts["run_id"] == run["run_id"]
    assert facts["ds"] == run["logical_date"].strftime("%Y-%m-%d")


async def test_scheduled_runs_have_airflow_3s_dates_in_the_run_and_the_tasks_context(cluster):
    cluster.write_dag("timetables.py", CONTEXT_TASK)
    cluster.start("scheduler")
    cluster.start("worker")
    for dag_id in ("every_5s", "every_minute", "continuous", "daily_intervals"):
        await cluster.wait_dag(dag_id, timeout=300)  # the parse server imports Airflow first
    started = datetime.now(UTC)
    listed = await anyio.to_thread.run_sync(lambda: cluster.cli("dags", "list"))
    assert listed.returncode == 0, listed.stderr
    shown = {line.split()[0]: line for line in listed.stdout.splitlines() if line.strip()}
    assert "0:00:05" in shown["every_5s"]
    assert "* * * * * (Every minute)" in shown["every_minute"]
    assert "0 0 * * * (At 00:00)" in shown["daily_intervals"]

    async def four_delta_runs():
        return settled(await scheduled_runs(cluster, "every_5s"), 4)

    runs = await wait_for(four_delta_runs, 240, "four runs of every_5s")
    for run in runs:
        at = run["logical_date"]
        assert run["data_interval_start"] == run["data_interval_end"] == at  # a trigger: a moment
        assert run["run_id"] == f"scheduled__{at.isoformat()}"  # run_after is the moment
        assert_context_is_the_run(run)
    # planned when the previous one is created, not when the scheduler wakes: exactly 5 s
    # apart (further only if a pass came more than 5 s late: catchup=False runs it at once)
    gaps = [b["logical_date"] - a["logical_date"] for a, b in zip(runs, runs[1:], strict=False)]
    assert all(gap >= timedelta(seconds=5) for gap in gaps), gaps
    assert gaps[-1] == timedelta(seconds=5), gaps

    async def minute_run():
        return settled(await scheduled_runs(cluster, "every_minute"), 1)

    [tick] = await wait_for(minute_run, 240, "the latest minute tick of every_minute")
    at = tick["logical_date"]
    assert (at.second, at.microsecond) == (0, 0)
    assert at <= started and (tick["data_interval_start"], tick["data_interval_end"]) == (at, at)
    assert tick["run_id"] == f"scheduled__{at.isoformat()}"
    assert_context_is_the_run(tick)

    async def two_days():
        return settled(await scheduled_runs(cluster, "daily_intervals"), 2)

    days = await wait_for(two_days, 240, "the two complete days of daily_intervals")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert [(d["data_interval_start"], d["data_interval_end"]) for d in days] == [
        (today - timedelta(days=2), today - timedelta(days=1)),
        (today - timedelta(days=1), today)]
    for day in days:
        assert day["logical_date"] == day["data_interval_start"]
        assert day["run_id"] == f"scheduled__{day['data_interval_end'].isoformat()}"
        assert_context_is_the_run(day)

    async def three_continuous_runs():
        return settled(await scheduled_runs(cluster, "continuous"), 3)

    runs = await wait_for(three_continuous_runs, 240, "three runs of continuous")
    assert runs[0]["data_interval_start"] == datetime(2026, 1, 1, tzinfo=UTC)  # the start date
    for before, after in zip(runs, runs[1:], strict=False):
        assert after["data_interval_start"] == before["data_interval_end"]
        assert after["logical_date"] == after["data_interval_start"]
    for run in runs:
        assert run["run_id"] == f"scheduled__{run['data_interval_end'].isoformat()}"
        assert_context_is_the_run(run)
    conn = await cluster.connect()
    try:
        spans = await conn.fetch("SELECT start_date, end_date FROM dag_run WHERE dag_id = "
                                 "'continuous' AND end_date IS NOT NULL ORDER BY logical_date")
    finally:
        await conn.close()
    assert all(b["start_date"] >= a["end_date"] for a, b in zip(spans, spans[1:], strict=False))
