"""`dags trigger --wait` rides out a PostgreSQL restart and still exits with the run's outcome.

Real daemons on a PostgreSQL of the test's own (tests/faults: restartable on
the same port); the CLI is a real process waiting on the run while the server
is down long enough for every client to notice.
"""

from __future__ import annotations

import json
import subprocess
import sys

import anyio
import pytest

from tests.cluster import Cluster, wait_for
from tests.faults import OwnedPostgres

pytestmark = pytest.mark.timeout(240)

#: Each daemon imports Airflow as it starts: generous on a loaded machine; every wait ends as
#: soon as its condition holds.
START_S = 120.0

GATED = """
import time
from datetime import datetime
from pathlib import Path
from airflow.sdk import dag, task

@dag(schedule=None, start_date=datetime(2026, 1, 1))
def gated():
    @task
    def wait_for_gate():
        while not Path({gate!r}).exists():
            time.sleep(0.05)
        return "through"
    wait_for_gate()

gated()
"""


async def ready(cluster: Cluster) -> None:
    """The DAG parsed and the worker taking tries, so the CLI's own wait starts with the run."""
    await cluster.wait_dag("gated", timeout=START_S)

    async def worker_ready():
        return '"worker_ready"' in cluster.log("worker")

    await wait_for(worker_ready, START_S, "the worker to be ready")


async def test_trigger_wait_through_a_postgres_restart_exits_0(
        tmp_path, postgres: OwnedPostgres, redis_url, stream_prefix, dags_folder):
    gate = tmp_path / "gate"
    cluster = Cluster(tmp_path, db_url=postgres.url, redis_url=redis_url, prefix=stream_prefix,
                      dags_folder=dags_folder)
    try:
        cluster.write_dag("gated.py", GATED.format(gate=str(gate)))
        cluster.start_all()
        await ready(cluster)
        waiting = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "dags", "trigger", "gated", "--wait", "--json",
             "--timeout", "120"],
            env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        async def task_running():
            assert waiting.poll() is None, waiting.communicate()
            conn = await cluster.connect()
            try:
                return await conn.fetchval("SELECT 1 FROM task_instance WHERE state = 'running'")
            finally:
                await conn.close()

        await wait_for(task_running, 60, "the gated task to run")
        offset = len(cluster.log("scheduler"))

        async def noticed():
            return cluster.log("scheduler")[offset:].count("repair_connection_error") >= 2

        async with postgres.shutting_down():  # sessions terminated, new ones refused
            gate.touch()  # the task ends while the database is away
            await wait_for(noticed, 30, "the scheduler to notice PostgreSQL is away")
        await postgres.start()
        out, err = await anyio.to_thread.run_sync(lambda: waiting.communicate(timeout=120))
        assert waiting.returncode == 0, err
        doc = json.loads(out)
        assert (doc["state"], doc["tasks"][0]["return_value"]) == ("success", "through")
        assert "Traceback" not in err
    finally:
        cluster.stop_all()


async def test_trigger_wait_with_postgres_down_at_its_timeout_exits_3(
        tmp_path, postgres: OwnedPostgres, redis_url, stream_prefix, dags_folder):
    """The wait's own deadline passing while PostgreSQL is away is exit 3 (gave up
    waiting), not 2 (unreachable): the run was created and may still finish."""
    gate = tmp_path / "gate"  # never opened: the run cannot finish
    cluster = Cluster(tmp_path, db_url=postgres.url, redis_url=redis_url, prefix=stream_prefix,
                      dags_folder=dags_folder)
    try:
        cluster.write_dag("gated.py", GATED.format(gate=str(gate)))
        cluster.start_all()
        await ready(cluster)
        waiting = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "dags", "trigger", "gated", "--wait",
             "--timeout", "15"],
            env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        async def task_running():
            assert waiting.poll() is None, waiting.communicate()
            conn = await cluster.connect()
            try:
                return await conn.fetchval("SELECT 1 FROM task_instance WHERE state = 'running'")
            finally:
                await conn.close()

        await wait_for(task_running, 60, "the gated task to run")
        async with postgres.shutting_down():  # down until after the CLI's timeout
            out, err = await anyio.to_thread.run_sync(lambda: waiting.communicate(timeout=60))
        assert waiting.returncode == 3, err
        assert "gave up waiting after 15s" in err and "Traceback" not in err
    finally:
        gate.touch()
        cluster.stop_all()
