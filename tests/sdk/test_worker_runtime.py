"""The worker daemon's Task SDK path, in-process: a fault while handling one try stays there.

A real worker (``worker.daemon.Worker``) serves its Execution API and runs claimed
tries in real slot processes over a fresh database; its handling of one try is
made to fail after the try ran, while another try is still running.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from shared import bus
from shared.config import Settings
from shared.daemon import Lifecycle
from shared.db import create_pool, q
from worker.daemon import SdkApi, Worker

pytestmark = pytest.mark.timeout(90)

DAGS = Path(__file__).parent / "dags_e2e"
DAG_ID = "e2e_two_tasks"


async def queued(pool, task_ids: list[str]) -> list[tuple[int, int]]:
    """A running manual run of ``e2e_two_tasks`` with ``task_ids`` queued: (id, try)."""
    async with pool.acquire() as conn:
        await conn.execute(q("upsert_dag"), DAG_ID, str(DAGS / f"{DAG_ID}.py"), "h",
                           {"tasks": []}, False)
        run_pk = await conn.fetchval(q("insert_run"), DAG_ID, "manual__r1", "manual",
                                     datetime.now(UTC), None, None, {})
        await conn.execute(q("start_run"), run_pk)
        n = len(task_ids)
        await conn.execute(q("insert_tis"), run_pk, task_ids, [-1] * n, [0] * n,
                           ["default"] * n, ["default_pool"] * n, [1] * n, [1] * n)
        ids = [r["id"] for r in await conn.fetch(
            "SELECT id FROM task_instance WHERE run_pk = $1", run_pk)]
        await conn.execute(q("queue_tis"), ids)
        rows = await conn.fetch("SELECT id, try_number FROM task_instance WHERE run_pk = $1 "
                                "ORDER BY task_id", run_pk)
    return [(r["id"], r["try_number"]) for r in rows]


async def test_a_fault_handling_one_try_neither_stops_the_others_nor_the_worker(
        db, db_url, redis_url, stream_prefix, tmp_path):
    settings = Settings(database_url=db_url, redis_url=redis_url, stream_prefix=stream_prefix,
                        dags_folder=DAGS, logs_folder=tmp_path / "logs", home=tmp_path / "home",
                        worker_concurrency=2)
    pool = await create_pool(db_url, max_size=6)
    redis = bus.connect(redis_url)
    worker = Worker(settings, pool, redis, Lifecycle("worker-test"))
    handled = worker.finish_sdk

    async def finish_sdk(req, result):
        if req["task_id"] == "quick":
            raise RuntimeError("writing this outcome failed")
        await handled(req, result)

    worker.finish_sdk = finish_sdk
    try:
        async with anyio.create_task_group() as tg:
            worker.api = SdkApi(worker)
            tg.start_soon(worker.api.serve, worker)
            ids = await queued(pool, ["quick", "slow"])
            async with pool.acquire() as conn:
                rows = await conn.fetch(q("claim_tis"), [i for i, _ in ids], [t for _, t in ids],
                                        worker.id, None, None)
            async with anyio.create_task_group() as tries:
                for row in sorted(rows, key=lambda r: r["task_id"]):
                    tries.start_soon(worker.execute, worker._request(row), worker.idle.pop())
            worker.api.stop()
        states = dict(await db.fetch("SELECT task_id, state FROM task_instance"))
        assert states == {"quick": "success", "slow": "success"}
        assert worker.done_count == 1  # the slow try was handled to its end
        assert not worker.running and len(worker.idle) == 2  # the quick try is no longer held
        # the faulted try's slot was killed; the other one ran on and is alive
        assert sorted(slot.alive for slot in worker.idle) == [False, True]
        slow = await db.fetchval("SELECT value::text FROM xcom WHERE task_id = 'slow'")
        assert slow == '"slow done"'
    finally:
        for slot in worker.idle:
            await slot.stop()
        await worker.fork_server.stop()
        worker.api.sock.close()
        await redis.aclose()
        await pool.close()
