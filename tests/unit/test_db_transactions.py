"""The scheduler's pass transaction: committed as usual, rolled back whole, never durable-waited."""

from __future__ import annotations

import anyio
import pytest

from shared.db import create_pool, rederivable_transaction


@pytest.fixture
async def pool(db_url, db):
    await db.execute("CREATE TABLE decision (id int PRIMARY KEY, v text)")
    pool = await create_pool(db_url, max_size=1)
    yield pool
    await pool.close()


async def test_a_rederivable_transaction_commits_without_waiting_for_the_flush(pool, db):
    async with pool.acquire() as conn, rederivable_transaction(conn):
        await conn.execute("INSERT INTO decision VALUES (1, 'queued')")
        assert await conn.fetchval("SHOW synchronous_commit") == "off"
        assert await db.fetchval("SELECT count(*) FROM decision") == 0  # not yet committed
    assert await db.fetchval("SELECT v FROM decision WHERE id = 1") == "queued"
    async with pool.acquire() as conn:  # the setting was local to that transaction
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        assert not conn.is_in_transaction()


async def test_an_exception_rolls_the_whole_transaction_back(pool, db):
    with pytest.raises(ZeroDivisionError):
        async with pool.acquire() as conn, rederivable_transaction(conn):
            await conn.execute("INSERT INTO decision VALUES (1, 'queued')")
            1 / 0  # noqa: B018
    assert await db.fetchval("SELECT count(*) FROM decision") == 0
    async with pool.acquire() as conn:
        assert not conn.is_in_transaction()
        await conn.execute("INSERT INTO decision VALUES (2, 'next pass')")
    assert await db.fetchval("SELECT count(*) FROM decision") == 1


async def test_a_cancelled_pass_is_rolled_back_and_its_connection_stays_usable(pool, db):
    started = anyio.Event()

    async def slow_pass():
        async with pool.acquire() as conn, rederivable_transaction(conn):
            await conn.execute("INSERT INTO decision VALUES (1, 'queued')")
            started.set()
            await conn.execute("SELECT pg_sleep(30)")

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_pass)
        await started.wait()
        tg.cancel_scope.cancel()
    assert await db.fetchval("SELECT count(*) FROM decision") == 0
    with anyio.fail_after(10):
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1
            assert not conn.is_in_transaction()
