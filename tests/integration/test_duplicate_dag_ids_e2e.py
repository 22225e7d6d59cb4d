"""End to end: two DAG files with one dag_id; the first keeps running, the second waits.

The second file gets Airflow's ``AirflowDagDuplicatedIdException`` import
error naming both files; deleting the first hands the dag_id over to it.
"""

from __future__ import annotations

import pytest

from tests.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(120)

TWIN = """
from datetime import datetime
from airflow.sdk import dag, task

@dag(dag_id="twin", schedule=None, start_date=datetime(2026, 1, 1))
def twin():
    @task
    def which():
        return {which!r}
    which()
twin()
"""


async def folder_state(cluster: Cluster) -> tuple[str | None, dict[str, str]]:
    """The fileloc of the active ``twin`` DAG, and the import errors by fileloc."""
    conn = await cluster.connect()
    try:
        owner = await conn.fetchval("SELECT fileloc FROM dag WHERE dag_id = 'twin' AND is_active")
        rows = await conn.fetch("SELECT fileloc, message FROM import_error")
    finally:
        await conn.close()
    return owner, {r["fileloc"]: r["message"] for r in rows}


async def run_twin(cluster: Cluster) -> str:
    doc = await cluster.wait_run(await cluster.trigger("twin", allow_errors=True))
    assert doc["state"] == "success", doc
    return cluster.by_task(doc)["which"]["return_value"]


async def test_the_file_that_had_the_dag_id_keeps_it_until_it_is_deleted(cluster: Cluster):
    # "b_first.py" sorts after "a_second.py": what counts is which file had the dag_id
    first = cluster.write_dag("b_first.py", TWIN.format(which="first")).resolve()
    cluster.start("scheduler")
    cluster.start("worker")
    await cluster.wait_dag("twin", timeout=120)  # the scheduler imports Airflow first

    second = cluster.write_dag("a_second.py", TWIN.format(which="second")).resolve()

    async def refused():
        owner, errors = await folder_state(cluster)
        return (owner, errors) if str(second) in errors else None

    owner, errors = await wait_for(refused, 30, "the second file's import error")
    assert owner == str(first)
    assert errors == {str(second): "AirflowDagDuplicatedIdException: Ignoring DAG twin from "
                                   f"{second} - also found in {first}"}
    assert await run_twin(cluster) == "first"

    first.unlink()

    async def taken_over():
        owner, errors = await folder_state(cluster)
        return owner == str(second) and not errors

    await wait_for(taken_over, 30, "the second file to take the dag_id over")
    assert await run_twin(cluster) == "second"
