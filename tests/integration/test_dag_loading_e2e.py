"""End to end: DAG files Airflow's DagBag refuses are import errors, worded by Airflow; the others run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import anyio
import pytest

from tests.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(120)

CYCLE = """
from datetime import datetime
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG("looping", schedule=None, start_date=datetime(2026, 1, 1)):
    a = EmptyOperator(task_id="a")
    b = EmptyOperator(task_id="b")
    a >> b {closing}
"""

BAD_ID = """
from datetime import datetime
from airflow.sdk import dag, task

@dag(dag_id="nightly etl/v2", schedule=None, start_date=datetime(2026, 1, 1))
def etl():
    @task
    def hello():
        return 1
    hello()
etl()
"""

ZONED_START = """
import pendulum
from airflow.sdk import dag, task

@dag(schedule=None, start_date=pendulum.datetime(2021, 1, 1, tz="Europe/Paris"), catchup=False)
def zoned_start():
    @task
    def start_date(dag=None):
        return dag.start_date.isoformat()
    start_date()
zoned_start()
"""


async def import_errors(cluster: Cluster) -> dict[str, str]:
    out = await anyio.to_thread.run_sync(lambda: cluster.cli("dags", "list", "--json"))
    assert out.returncode == 0, out.stderr
    return {Path(e["fileloc"]).name: e["message"] for e in json.loads(out.stdout)["import_errors"]}


async def test_refused_files_are_import_errors_and_the_rest_runs(cluster: Cluster):
    cycle = cluster.write_dag("looping.py", CYCLE.format(closing=">> a"))
    cluster.write_dag("bad_id.py", BAD_ID)
    cluster.write_dag("zoned_start.py", ZONED_START)
    cluster.start_all()

    await cluster.wait_dag("zoned_start", timeout=120, allow_errors=True)  # Airflow imports first
    doc = await cluster.wait_run(await cluster.trigger("zoned_start", allow_errors=True), 120)
    assert doc["state"] == "success"
    assert cluster.by_task(doc)["start_date"]["return_value"] == "2020-12-31T23:00:00+00:00"

    async def both() -> dict[str, str] | None:
        found = await import_errors(cluster)
        return found if {"looping.py", "bad_id.py"} <= set(found) else None

    errors = await wait_for(both, 30, "two import errors")
    # Airflow's DagBag words them: a cycle as its exception, a bad dag_id as the traceback
    assert errors["looping.py"] == \
        "AirflowDagCycleException: Cycle detected in Dag: looping. Faulty task: b"
    bad_id = errors["bad_id.py"]
    assert bad_id.startswith("Traceback (most recent call last):"), bad_id
    assert bad_id.rstrip().endswith(
        "ValueError: The key 'nightly etl/v2' has to be made of alphanumeric characters, "
        "dashes, dots, and underscores exclusively"), bad_id

    cycle.write_text(CYCLE.format(closing=""))
    later = time.time() + 5
    os.utime(cycle, (later, later))  # a new mtime even within the file system's resolution
    doc = await cluster.wait_run(await cluster.trigger("looping", allow_errors=True))
    assert doc["state"] == "success"
    assert "looping.py" not in await import_errors(cluster)
