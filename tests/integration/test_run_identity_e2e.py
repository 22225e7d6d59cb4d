"""Runs are identified per DAG, as in Airflow: two DAGs on one schedule both get every run.

Real daemons, real PostgreSQL and Redis. Both DAGs have the same cron schedule
and start date, so their scheduled runs have the same run ids
(``scheduled__<tick>``, a cron string being Airflow 3's trigger timetable); the CLI then needs the DAG to tell them
apart and says so, in one line, when it is not given.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.runview import run_document
from tests.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(240)

DAG = """
from datetime import datetime, timezone
from airflow.sdk import dag, task

@dag(dag_id={dag_id!r}, schedule="0 * * * *", catchup=True,
     start_date=datetime.fromisoformat({start!r}))
def hourly():
    @task
    def which(dag_run=None):
        return dag_run.dag_id
    which()

hourly()
"""


async def test_two_dags_on_one_cron_schedule_both_get_every_run(cluster: Cluster):
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = hour - timedelta(hours=3)
    # catchup from three hours ago: the ticks start, +1 h, +2 h and the last hour itself
    expected = {f"scheduled__{(start + timedelta(hours=h)).isoformat()}" for h in range(4)}
    for dag_id in ("hourly_a", "hourly_b"):
        cluster.write_dag(f"{dag_id}.py", DAG.format(dag_id=dag_id, start=start.isoformat()))
    cluster.start_all()

    async def runs_done():
        conn = await cluster.connect()
        try:
            rows = await conn.fetch("SELECT dag_id, run_id, state FROM dag_run")
        finally:
            await conn.close()
        by_dag = {d: {r["run_id"] for r in rows if r["dag_id"] == d and r["state"] == "success"}
                  for d in ("hourly_a", "hourly_b")}
        return by_dag if all(expected <= ids for ids in by_dag.values()) else None

    # the scheduler imports Airflow and parses first: generous on a loaded machine
    by_dag = await wait_for(runs_done, 150, "every scheduled run of both DAGs to succeed")
    assert by_dag["hourly_a"] & expected == by_dag["hourly_b"] & expected == expected
    run_id = min(expected)
    conn = await cluster.connect()
    try:
        for dag_id in ("hourly_a", "hourly_b"):
            doc = (await run_document(conn, run_id, dag_id))["doc"]
            assert (doc["dag_id"], doc["tasks"][0]["return_value"]) == (dag_id, dag_id)
    finally:
        await conn.close()
    assert "run_not_created" not in cluster.log("scheduler")

    shown = cluster.cli("runs", "show", "hourly_b", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert (json.loads(shown.stdout)["dag_id"], json.loads(shown.stdout)["run_id"]) == (
        "hourly_b", run_id)
    for command in ("show", "clear"):
        out = cluster.cli("runs", command, run_id)
        assert out.returncode == 2, out
        assert out.stderr.strip() == (
            f"run id {run_id!r} is ambiguous: DAGs 'hourly_a', 'hourly_b' each have a run "
            "of that id; give the DAG too: DAG_ID RUN_ID")
    missing = cluster.cli("runs", "show", "hourly_c", run_id)
    assert (missing.returncode, missing.stderr.strip()) == (
        2, f"run {run_id!r} of DAG 'hourly_c' not found")

    cleared = cluster.cli("runs", "clear", "hourly_a", run_id, "--wait", "--json", timeout=150)
    assert cleared.returncode == 0, cleared.stderr
    assert json.loads(cleared.stdout)["dag_id"] == "hourly_a"
