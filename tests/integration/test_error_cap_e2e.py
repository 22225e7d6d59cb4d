"""A task raising a 20 MB message: its error is stored capped and the run goes on.

Real daemons. The instance's error keeps the message's head and tail around a
marker naming the size cut; the worker's log line stays small; the task
downstream (``all_done``) still runs and, being the leaf, makes the run a success.
"""

from __future__ import annotations

import pytest

from shared.textcap import MAX_ERROR_CHARS
from tests.cluster import Cluster

pytestmark = pytest.mark.timeout(240)

DAG = """
    from datetime import datetime
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import dag

    def huge():
        raise RuntimeError("start of it " + "x" * (20 * 1024 * 1024) + " end of it")

    @dag(schedule=None, start_date=datetime(2026, 1, 1))
    def huge_error():
        PythonOperator(task_id="huge", python_callable=huge, retries=0) >> PythonOperator(
            task_id="after", python_callable=lambda: "ran", trigger_rule="all_done")

    huge_error()
"""


async def test_a_20_mb_error_is_stored_capped_and_the_run_goes_on(cluster: Cluster):
    cluster.write_dag("huge_error.py", DAG)
    cluster.start("scheduler")
    cluster.start("worker")
    await cluster.wait_dag("huge_error", timeout=90)  # the daemons import Airflow first
    doc = await cluster.wait_run(await cluster.trigger("huge_error"), 120)
    tasks = cluster.by_task(doc)
    assert (doc["state"], tasks["huge"]["state"], tasks["after"]["state"]) == (
        "success", "failed", "success")  # the leaf decides the run, as in Airflow
    assert tasks["after"]["return_value"] == "ran"
    conn = await cluster.connect()
    try:
        error = await conn.fetchval("SELECT error FROM task_instance WHERE task_id = 'huge'")
    finally:
        await conn.close()
    assert len(error) <= MAX_ERROR_CHARS
    assert error.startswith("RuntimeError: start of it xxx") and error.endswith("xxx end of it")
    assert " … [truncated 19.9 MB] … " in error
    assert max(len(line) for line in cluster.log("worker").splitlines()) < 2 * MAX_ERROR_CHARS
