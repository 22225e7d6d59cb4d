"""Parsing never holds scheduling back, and a DAGs folder that is not there retires nothing.

Real scheduler and worker processes, real PostgreSQL and Redis.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(150)

GOOD = """
    from datetime import datetime
    from airflow.sdk import dag, task

    @dag(schedule=None, start_date=datetime(2026, 1, 1))
    def good():
        @task
        def hello():
            return "hello"
        hello()
    good()
"""

HANGS = """
    import time
    from airflow.sdk import dag
    time.sleep(3600)
"""

PARSE_TIMEOUT_S = "25"


async def import_errors(cluster: Cluster) -> dict[str, str]:
    conn = await cluster.connect()
    try:
        rows = await conn.fetch("SELECT fileloc, message FROM import_error")
    finally:
        await conn.close()
    return {r["fileloc"].rsplit("/", 1)[-1]: r["message"] for r in rows}


async def dag_active(cluster: Cluster, dag_id: str) -> bool:
    conn = await cluster.connect()
    try:
        return bool(await conn.fetchval("SELECT is_active FROM dag WHERE dag_id = $1", dag_id))
    finally:
        await conn.close()


async def known_good_dag(cluster: Cluster) -> None:
    """The good DAG is in the database, as after any earlier scheduler run."""
    cluster.write_dag("b_good.py", GOOD)
    cluster.start("scheduler")
    await cluster.wait_dag("good", timeout=120)  # the scheduler imports Airflow first
    assert cluster.stop("scheduler") == 0


async def test_a_hanging_file_does_not_hold_back_a_known_dag(cluster: Cluster):
    await known_good_dag(cluster)
    hangs = cluster.write_dag("a_hangs.py", HANGS)  # first in the folder's order
    started = time.monotonic()
    cluster.start("scheduler", SLUICE_PARSE_TIMEOUT_S=PARSE_TIMEOUT_S)
    cluster.start("worker")

    doc = await cluster.wait_run(await cluster.trigger("good"))
    took = time.monotonic() - started
    assert doc["state"] == "success"
    assert "a_hangs.py" not in await import_errors(cluster), "the run waited for the parse"
    assert took < float(PARSE_TIMEOUT_S), took

    async def timed_out():
        return (await import_errors(cluster)).get("a_hangs.py")

    error = await wait_for(timed_out, 60, "the hanging file's import error")
    # Airflow's own dagbag_import_timeout: its traceback names the line the import hung on
    assert f'File "{hangs}", line 4, in <module>' in error, error
    assert (f"AirflowTaskTimeout: DagBag import timeout for {hangs} after "
            f"{float(PARSE_TIMEOUT_S)}s.") in error, error
    assert await dag_active(cluster, "good")


def sluice(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], env=cluster.env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", ["scheduler", "standalone"])
async def test_a_missing_dags_folder_stops_the_start(cluster: Cluster, tmp_path, command):
    await known_good_dag(cluster)
    missing = tmp_path / "nope"

    out = sluice(cluster, command, "--dags-folder", str(missing))
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert out.returncode == 2, lines[-20:]
    assert len(lines) == 1 and "dags_folder_missing" in lines[0], lines[-20:]
    assert f"DAGs folder {missing} does not exist" in lines[0]
    assert await dag_active(cluster, "good")


async def test_a_vanished_dags_folder_keeps_the_dags(cluster: Cluster, tmp_path):
    cluster.write_dag("b_good.py", GOOD)
    cluster.start("scheduler")
    await cluster.wait_dag("good", timeout=120)
    moved = tmp_path / "moved"
    cluster.dags_folder.rename(moved)

    async def logged(event: str) -> int:
        return cluster.log("scheduler").count(f'"event": "{event}"')

    await wait_for(lambda: logged("dags_folder_missing"), 30, "the missing folder's error")
    assert await dag_active(cluster, "good")
    moved.rename(cluster.dags_folder)
    await wait_for(lambda: logged("dags_folder_back"), 30, "the folder to be seen again")
    assert await logged("dags_folder_missing") == 1  # one line, not one per pass
    assert await dag_active(cluster, "good")
