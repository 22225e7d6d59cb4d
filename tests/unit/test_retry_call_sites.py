"""The three places that decide a retry agree on its delay, for the same try.

One instance (``retries=3``, ``retry_delay=60 s``, exponential backoff) fails its
second try three ways, each through the real code with real PostgreSQL and Redis:
its body raises (the task runner decides), its runner process dies (the worker
decides), its worker goes silent (the scheduler fails the zombie). Each time the
stored ``next_retry_at - end_date`` must be Airflow's ``next_retry_datetime``.
"""

from __future__ import annotations

import hashlib
import math
import textwrap
from pathlib import Path

import pytest

from scheduler.daemon import Scheduler
from scheduler.runs import insert_task_instances, task_instance_rows
from shared import bus
from shared.config import Settings
from shared.daemon import Lifecycle
from shared.dagbag import DagCache
from shared.db import create_pool, q
from shared.serialization import DagSpec, serialize_dag
from worker.daemon import Worker
from worker.supervisor import RunnerProcess

pytestmark = pytest.mark.timeout(60)

DAG_FILE = '''
import os
from datetime import datetime, timedelta
from shared.sdk import dag, task

@task(retries=3, retry_delay=timedelta(seconds=60), retry_exponential_backoff=True)
def flaky():
    if os.path.exists(os.path.join(os.path.dirname(__file__), "crash")):
        os._exit(3)  # the runner process dies: the worker decides the retry
    raise RuntimeError("failed")

@dag(dag_id="retrying", start_date=datetime(2026, 1, 1), schedule=None)
def retrying():
    flaky()

retrying()
'''

TRY = 2


def airflow_delay() -> float:
    """Airflow's next_retry_datetime - end_date for try 2 of this instance."""
    min_backoff = math.ceil(60 * 2 ** (TRY - 1))
    key = f"retrying#flaky#2026-03-04 00:00:00+00:00#{TRY}"
    h = int(hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest(), 16)
    return float(min(min_backoff + h % min_backoff, 86400))


@pytest.fixture
async def setup(tmp_path: Path, db, db_url, redis_url, stream_prefix):
    dag_file = tmp_path / "retrying.py"
    dag_file.write_text(textwrap.dedent(DAG_FILE))
    spec = DagSpec.model_validate(serialize_dag(DagCache(tmp_path).get(str(dag_file), "retrying")))
    await db.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized)"
                     " VALUES ('retrying', $1, 'h', $2::json)", str(dag_file),
                     spec.model_dump(mode="json"))
    run_pk = await db.fetchval(
        "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state, start_date)"
        " VALUES ('retrying', 'r1', 'manual', '2026-03-04T00:00:00+00:00', 'running', now())"
        " RETURNING id")
    await insert_task_instances(db, run_pk, task_instance_rows(spec))
    settings = Settings(database_url=db_url, redis_url=redis_url, stream_prefix=stream_prefix,
                        dags_folder=tmp_path, logs_folder=tmp_path / "logs",
                        worker_concurrency=1)
    pool = await create_pool(db_url, max_size=3)
    redis = bus.connect(redis_url)
    try:
        yield settings, pool, redis, spec
    finally:
        await redis.aclose()
        await pool.close()


async def stored_delay(db) -> float:
    row = await db.fetchrow("SELECT state, extract(epoch FROM next_retry_at - end_date) AS delay"
                            " FROM task_instance WHERE task_id = 'flaky'")
    assert row["state"] == "up_for_retry"
    return float(row["delay"])


async def fail_on_a_worker(db, settings, pool, redis) -> float:
    """Queue try 2, claim it as the worker does and run it in a real runner process."""
    await db.execute("UPDATE task_instance SET state = 'queued', try_number = $1,"
                     " next_retry_at = NULL, end_date = NULL", TRY)
    worker = Worker(settings, pool, redis, Lifecycle("worker-test"))
    ti_id = await db.fetchval("SELECT id FROM task_instance")
    async with pool.acquire() as conn:
        rows = await conn.fetch(q("claim_tis"), [ti_id], [TRY], worker.id)
    runner = RunnerProcess(settings.dags_folder, settings.max_xcom_bytes)
    try:
        await worker.execute(worker._request(rows[0]), runner)
    finally:
        await runner.stop()
    return await stored_delay(db)


async def fail_as_a_zombie(db, settings, pool, redis, spec) -> float:
    await db.execute("UPDATE task_instance SET state = 'running', try_number = $1,"
                     " worker_id = 'gone', heartbeat_at = now() - interval '1 hour',"
                     " next_retry_at = NULL, end_date = NULL", TRY)
    scheduler = Scheduler(settings, pool, redis, Lifecycle("scheduler-test"))
    scheduler.specs[spec.dag_id] = spec
    async with pool.acquire() as conn, conn.transaction():
        assert await scheduler._fail_zombies(conn)
    return await stored_delay(db)


async def test_runner_worker_and_scheduler_store_one_delay_for_one_try(setup, db, tmp_path):
    settings, pool, redis, spec = setup
    by_runner = await fail_on_a_worker(db, settings, pool, redis)
    (tmp_path / "crash").touch()
    by_worker = await fail_on_a_worker(db, settings, pool, redis)
    assert "exited unexpectedly" in await db.fetchval("SELECT error FROM task_instance")
    by_scheduler = await fail_as_a_zombie(db, settings, pool, redis, spec)
    assert (by_runner, by_worker, by_scheduler) == (airflow_delay(),) * 3
