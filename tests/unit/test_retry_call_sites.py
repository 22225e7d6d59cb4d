"""The four places that decide a retry agree on its delay, for the same try.

One instance (``retries=3``, ``retry_delay=60 s``, exponential backoff) fails its
second try four ways, each through the real code with real PostgreSQL and Redis:
its body raises (the Task SDK reports ``up_for_retry`` and the worker's Execution
API decides the delay), its slot process dies (the worker decides), its trigger
ends it with a ``TaskFailedEvent`` (the triggerer decides), its worker goes
silent (the scheduler fails the zombie). Each time the stored ``next_retry_at -
end_date`` must be Airflow's ``next_retry_datetime``.
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import anyio
import pytest

from scheduler.daemon import Scheduler
from scheduler.runs import insert_task_instances, task_instance_rows
from shared import bus
from shared.airflow_spec import parse
from shared.config import Settings
from shared.daemon import Lifecycle
from shared.db import create_pool, q
from shared.serialization import DagSpec
from tests.unit.conftest import write_dag_file
from triggerer.daemon import Triggerer
from worker.daemon import SdkApi, Worker

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("isolated_dag_modules")]

DAG_FILE = '''
import os
from datetime import datetime, timedelta
from airflow.sdk import dag, task

@task(retries=3, retry_delay=timedelta(seconds=60), retry_exponential_backoff=True)
def flaky():
    if os.path.exists(os.path.join(os.path.dirname(__file__), "crash")):
        os._exit(3)  # the slot process dies: the worker decides the retry
    raise RuntimeError("failed")

@dag(dag_id="retrying", start_date=datetime(2026, 1, 1), schedule=None)
def retrying():
    flaky()

retrying()
'''

TRIGGER_FILE = '''
from airflow.triggers.base import BaseTrigger, TaskFailedEvent


class FailsTheTask(BaseTrigger):
    """Ends its task instance from the triggerer: a failed try, no worker involved."""

    def serialize(self):
        return ("retry_call_site_trigger.FailsTheTask", {})

    async def run(self):
        yield TaskFailedEvent()
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
    dag_file = write_dag_file(tmp_path, "retrying", DAG_FILE)
    [parsed] = parse(dag_file, tmp_path)
    assert parsed["error"] is None, parsed["error"]
    spec = DagSpec.model_validate(parsed["dags"][0])
    await db.execute(q("upsert_dag"), "retrying", str(dag_file), "h", parsed["dags"][0], False)
    run_pk = await db.fetchval(
        "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state, start_date)"
        " VALUES ('retrying', 'r1', 'manual', '2026-03-04T00:00:00+00:00', 'running', now())"
        " RETURNING id")
    await insert_task_instances(db, run_pk, task_instance_rows(spec))
    settings = Settings(database_url=db_url, redis_url=redis_url, stream_prefix=stream_prefix,
                        dags_folder=tmp_path, logs_folder=tmp_path / "logs",
                        home=tmp_path / "home", worker_concurrency=1)
    pool = await create_pool(db_url, max_size=6)
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


async def fail_on_a_worker(db, worker: Worker) -> float:
    """Queue try 2, claim it as the worker does and run it in the worker's real slot."""
    await db.execute("UPDATE task_instance SET state = 'queued', try_number = $1,"
                     " next_retry_at = NULL, end_date = NULL", TRY)
    ti_id = await db.fetchval("SELECT id FROM task_instance")
    async with worker.pool.acquire() as conn:
        rows = await conn.fetch(q("claim_tis"), [ti_id], [TRY], worker.id, None, None)
    await worker.execute(worker._request(rows[0]), worker.idle.pop())
    return await stored_delay(db)


async def fail_in_the_triggerer(db, settings, pool, redis, tmp_path) -> float:
    """Try 2 deferred on a trigger that ends it with a TaskFailedEvent, run by the triggerer."""
    write_dag_file(tmp_path, "retry_call_site_trigger", TRIGGER_FILE)
    sys.path.insert(0, str(tmp_path))  # the DAGs folder, as the triggerer has it
    trigger_id = await db.fetchval("INSERT INTO trigger (classpath, kwargs) VALUES"
                                   " ('retry_call_site_trigger.FailsTheTask', '{}') RETURNING id")
    await db.execute("UPDATE task_instance SET state = 'deferred', try_number = $1,"
                     " trigger_id = $2, next_method = 'execute_complete', next_kwargs = '{}',"
                     " next_retry_at = NULL, end_date = NULL", TRY, trigger_id)
    triggerer = Triggerer(settings, pool, redis, Lifecycle("triggerer-test"))
    [row] = await db.fetch(q("load_triggers"), [trigger_id])
    await triggerer._run(dict(row))
    assert await db.fetchval("SELECT count(*) FROM trigger") == 0
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


async def test_the_api_worker_triggerer_and_scheduler_store_one_delay_for_one_try(
        setup, db, tmp_path):
    settings, pool, redis, spec = setup
    worker = Worker(settings, pool, redis, Lifecycle("worker-test"))
    try:
        async with anyio.create_task_group() as tg:
            worker.api = SdkApi(worker)
            tg.start_soon(worker.api.serve, worker)
            by_api = await fail_on_a_worker(db, worker)
            assert await db.fetchval("SELECT error FROM task_instance") == "RuntimeError: failed"
            (tmp_path / "crash").touch()
            by_worker = await fail_on_a_worker(db, worker)
            assert await db.fetchval("SELECT error FROM task_instance") == \
                "task process exited unexpectedly (exit code 3)"
            worker.api.stop()
    finally:
        for slot in worker.idle:
            await slot.stop()
        await worker.fork_server.stop()
        worker.api.sock.close()
    by_triggerer = await fail_in_the_triggerer(db, settings, pool, redis, tmp_path)
    by_scheduler = await fail_as_a_zombie(db, settings, pool, redis, spec)
    assert (by_api, by_worker, by_triggerer, by_scheduler) == (airflow_delay(),) * 4
