"""Each statement that starts a new try of an up_for_retry instance writes the try it
ended to task_instance_history in the same statement; a fresh instance writes none."""

from __future__ import annotations

import pytest

from shared.db import q


@pytest.fixture
async def ti(db):
    """One instance of a run, up for retry after a first try that failed."""
    await db.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized) "
                     "VALUES ('d', 'd.py', 'h', '{}')")
    run_pk = await db.fetchval(
        "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state) "
        "VALUES ('d', 'r', 'manual', now(), 'running') RETURNING id")
    await db.execute("INSERT INTO task_instance (run_pk, task_id) VALUES ($1, 'fresh')", run_pk)
    return await db.fetchval(
        "INSERT INTO task_instance (run_pk, task_id, state, try_number, max_tries, start_date, "
        "end_date, error, hostname) VALUES ($1, 't', 'up_for_retry', 1, 2, now(), now(), "
        "'boom', 'host-a') RETURNING id", run_pk)


async def _history(db) -> list[tuple]:
    rows = await db.fetch("SELECT task_id, try_number, state, error, hostname, uuid "
                          "FROM task_instance_history ORDER BY task_id, try_number")
    return [tuple(r) for r in rows]


async def test_queueing_the_next_try_keeps_the_ended_one(db, ti):
    first = await db.fetchval("SELECT uuid FROM task_instance WHERE id = $1", ti)
    fresh = await db.fetchval("SELECT id FROM task_instance WHERE task_id = 'fresh'")
    rows = await db.fetch(q("queue_tis"), [ti, fresh])
    assert sorted(r["try_number"] for r in rows) == [1, 2]
    assert await _history(db) == [("t", 1, "up_for_retry", "boom", "host-a", first)]


async def test_an_unstartable_next_try_keeps_the_ended_one(db, ti):
    await db.execute(q("fail_unstartable"), ti, "no such operator")
    assert [h[:3] for h in await _history(db)] == [("t", 1, "up_for_retry")]
    assert await db.fetchval("SELECT try_number FROM task_instance WHERE id = $1", ti) == 2


async def test_a_next_try_started_in_the_triggerer_keeps_the_ended_one(db, ti):
    started = await db.fetch(q("start_in_triggerer"), [ti], ["m.Trigger"], ["{}"], ["go"],
                             ["{}"], [None])
    assert [r["id"] for r in started] == [ti]
    assert [h[:3] for h in await _history(db)] == [("t", 1, "up_for_retry")]
