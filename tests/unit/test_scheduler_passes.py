"""One scheduling pass (``Scheduler.schedule``) against real PostgreSQL and Redis.

Two schedulers take turns on a run through its row lock (``FOR NO KEY UPDATE SKIP
LOCKED``). Here the other scheduler is played by a transaction of the test's
own that holds that lock, and changes the run's instances while it does.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import asyncpg
import pytest
from airflow.sdk import dag, task

from scheduler.daemon import LOCKED_RETRY_S, Scheduler
from scheduler.runs import insert_task_instances, task_instance_rows, utcnow
from shared import bus
from shared.config import Settings
from shared.daemon import Lifecycle
from shared.db import create_pool, q
from tests.unit.conftest import spec_of

pytestmark = pytest.mark.timeout(60)


@task
def step():
    return 1


@dag(dag_id="pair", start_date=datetime(2026, 1, 1), schedule=None)
def pair():
    step.override(task_id="first")() >> step.override(task_id="second")()


SPEC = spec_of(pair())


@pytest.fixture
async def scheduler(db_url, redis_url, stream_prefix):
    settings = Settings(database_url=db_url, redis_url=redis_url, stream_prefix=stream_prefix)
    pool = await create_pool(db_url, max_size=2)
    redis = bus.connect(redis_url)
    sched = Scheduler(settings, pool, redis, Lifecycle("scheduler-test"))
    sched.specs[SPEC.dag_id] = SPEC
    yield sched
    await redis.aclose()
    await pool.close()


async def make_run(db, state: str = "running") -> int:
    await db.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized)"
                     " VALUES ('pair', 'pair.py', 'h', $1::json)", SPEC.model_dump(mode="json"))
    run_pk = await db.fetchval(
        "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state, start_date)"
        " VALUES ('pair', 'r1', 'manual', now(), $1, now()) RETURNING id", state)
    await insert_task_instances(db, run_pk, task_instance_rows(SPEC))
    return run_pk


async def states(db, run_pk: int) -> dict[str, str | None]:
    rows = await db.fetch("SELECT task_id, state FROM task_instance WHERE run_pk = $1", run_pk)
    return {r["task_id"]: r["state"] for r in rows}


async def test_a_run_another_pass_holds_is_tried_again_soon_and_sees_what_that_pass_did(
        scheduler, db, db_url):
    run_pk = await make_run(db)
    other = await asyncpg.connect(db_url)  # the other scheduler, mid-pass
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT 1 FROM dag_run WHERE id = $1 FOR UPDATE", run_pk)
        await other.execute("UPDATE task_instance SET state = 'success'"
                            " WHERE run_pk = $1 AND task_id = 'first'", run_pk)
        before = utcnow()
        await scheduler.schedule([run_pk])
        assert await states(db, run_pk) == {"first": None, "second": None}  # it skipped the run
        due = scheduler.timers[run_pk]
        assert before < due <= utcnow() + timedelta(seconds=LOCKED_RETRY_S)
        await tx.commit()
    finally:
        await other.close()
    await scheduler.schedule([run_pk])  # the retry: the other pass's commit is seen
    assert await states(db, run_pk) == {"first": "success", "second": "queued"}
    assert run_pk not in scheduler.timers


async def test_a_finished_run_is_not_tried_again(scheduler, db):
    run_pk = await make_run(db, state="success")
    await scheduler.schedule([run_pk])
    assert run_pk not in scheduler.timers


async def test_an_empty_task_ended_by_the_pass_counts_a_try_and_a_skipped_one_does_not(db):
    run_pk = await make_run(db)
    ids = {r["task_id"]: r["id"] for r in await db.fetch(
        "SELECT id, task_id FROM task_instance WHERE run_pk = $1", run_pk)}
    await db.execute(q("end_tis"), [ids["first"], ids["second"]], ["success", "skipped"])
    rows = await db.fetch("SELECT task_id, state, try_number FROM task_instance"
                          " WHERE run_pk = $1 ORDER BY task_id", run_pk)
    assert [tuple(r.values()) for r in rows] == [("first", "success", 1),
                                                 ("second", "skipped", 0)]


# --- the counts a pass keeps between passes (scheduler/counts.py) ---------------------------
async def db_counts(db, run_pk: int) -> dict[str, dict[str | None, int]]:
    rows = await db.fetch("SELECT task_id, state, count(*)::int AS n FROM task_instance"
                          " WHERE run_pk = $1 GROUP BY task_id, state", run_pk)
    out: dict[str, dict[str | None, int]] = {}
    for r in rows:
        out.setdefault(r["task_id"], {})[r["state"]] = r["n"]
    return out


def kept_counts(scheduler, run_pk: int) -> dict[str, dict[str | None, int]]:
    return {task: dict(c) for task, c in scheduler.counts.counts(run_pk).items()}


async def test_a_pass_reads_only_the_instances_changed_since_the_previous_read(scheduler, db):
    run_pk = await make_run(db)
    await scheduler.schedule([run_pk])  # read whole, 'first' queued
    xmin, epoch = scheduler.counts.since(run_pk)
    assert xmin is not None and kept_counts(scheduler, run_pk) == {"first": {None: 1},
                                                                   "second": {None: 1}}
    # 'second' unchanged since long before that read (any transaction open anywhere on the
    # server holds the read's xmin back, and what changed after it is read again: harmless)
    await db.execute("UPDATE task_instance SET state_xid = '1'"
                     " WHERE run_pk = $1 AND task_id = 'second'", run_pk)
    await db.execute("UPDATE task_instance SET state = 'success'"
                     " WHERE run_pk = $1 AND task_id = 'first'", run_pk)
    rows = await db.fetch(q("read_runs"), [run_pk], [xmin], [epoch], [], [], [])
    assert [(r["task_id"], r["state"]) for r in rows if r["kind"] == "change"] == [
        ("first", "success")]
    await scheduler.schedule([run_pk])
    assert await states(db, run_pk) == {"first": "success", "second": "queued"}
    # as that pass read them, before it queued 'second'
    assert kept_counts(scheduler, run_pk) == {"first": {"success": 1}, "second": {None: 1}}


async def test_a_change_committed_after_a_read_that_could_not_see_it_is_read_later(
        scheduler, db, db_url):
    run_pk = await make_run(db)
    await scheduler.schedule([run_pk])
    late = await asyncpg.connect(db_url)  # a worker's end, in flight during the next pass
    try:
        tx = late.transaction()
        await tx.start()
        await late.execute("UPDATE task_instance SET state = 'success'"
                           " WHERE run_pk = $1 AND task_id = 'first'", run_pk)
        await scheduler.schedule([run_pk])  # cannot see it yet
        assert kept_counts(scheduler, run_pk)["first"] == {"queued": 1}
        await tx.commit()
    finally:
        await late.close()
    await scheduler.schedule([run_pk])
    assert await states(db, run_pk) == {"first": "success", "second": "queued"}
    await scheduler.schedule([run_pk])  # its read sees what the database holds
    assert kept_counts(scheduler, run_pk) == await db_counts(db, run_pk)


async def test_deleted_instances_make_the_next_pass_read_the_run_whole(scheduler, db):
    run_pk = await make_run(db)
    await scheduler.schedule([run_pk])
    _, epoch = scheduler.counts.since(run_pk)
    await db.execute("DELETE FROM task_instance WHERE run_pk = $1 AND task_id = 'second'", run_pk)
    assert await db.fetchval("SELECT ti_epoch FROM dag_run WHERE id = $1", run_pk) == epoch + 1
    await db.execute("UPDATE task_instance SET state = 'running'"
                     " WHERE run_pk = $1 AND task_id = 'first'", run_pk)
    await scheduler.schedule([run_pk])
    assert kept_counts(scheduler, run_pk) == {"first": {"running": 1}}
    assert scheduler.counts.since(run_pk)[1] == epoch + 1


async def test_counts_read_in_a_pass_that_did_not_commit_are_forgotten(scheduler, db, monkeypatch):
    run_pk = await make_run(db)

    async def broken(*args):
        raise RuntimeError("the pass fails after its read")

    monkeypatch.setattr(scheduler, "_apply_limits", broken)
    with pytest.raises(RuntimeError):
        await scheduler.schedule([run_pk])
    assert scheduler.counts.since(run_pk) == (None, -1)
    monkeypatch.undo()
    await scheduler.schedule([run_pk])
    assert await states(db, run_pk) == {"first": "queued", "second": None}


async def test_a_finished_run_leaves_no_counts(scheduler, db):
    run_pk = await make_run(db)
    await db.execute("UPDATE task_instance SET state = 'success' WHERE run_pk = $1", run_pk)
    await scheduler.schedule([run_pk])
    assert await db.fetchval("SELECT state FROM dag_run WHERE id = $1", run_pk) == "success"
    assert run_pk not in scheduler.counts.runs


def test_a_pass_reads_as_many_waiting_instances_as_free_slots_can_take(scheduler):
    from scheduler.daemon import MIN_WINDOW, WINDOW
    from scheduler.limits import Busy

    run = {"id": 1, "dag_id": "pair"}
    scheduler.pools = {"default_pool": 128}
    busy = Busy()
    assert scheduler._windows([run], busy) == {}  # a run not read before: whole windows
    scheduler.counts.read(1, epoch=0, whole=True, xmin=1,
                          changes=[(1, "first", None), (2, "second", "up_for_retry")])
    busy.pool_slots["default_pool"] = 120
    windows = scheduler._windows([run], busy)
    assert windows == {(1, "first"): MIN_WINDOW}  # 8 free; 'second' waits for a retry
    busy.pool_slots["default_pool"] = 0
    assert scheduler._windows([run], busy)[(1, "first")] == min(WINDOW, max(MIN_WINDOW, SPEC.max_active_tasks))
    scheduler.ending[1] = {"first"}  # its last pass ended instances: a whole window
    assert scheduler._windows([run], busy) == {}


@task
def fan(x):
    return x


@dag(dag_id="wide", start_date=datetime(2026, 1, 1), schedule=None, max_active_tasks=1000)
def wide():
    fan.expand(x=list(range(40)))


async def test_a_run_with_work_queued_is_decided_again_after_the_held_gap_not_at_each_end(
        scheduler, db):
    from scheduler.daemon import HELD_GAP_S, QUEUED_TO_HOLD

    spec = spec_of(wide())
    scheduler.specs[spec.dag_id] = spec
    await db.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized)"
                     " VALUES ('wide', 'wide.py', 'h', $1::json)", spec.model_dump(mode="json"))
    run_pk = await db.fetchval(
        "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state, start_date)"
        " VALUES ('wide', 'r1', 'manual', now(), 'running', now()) RETURNING id")
    await insert_task_instances(db, run_pk, task_instance_rows(spec))
    assert scheduler._due_now([run_pk]) == [run_pk]
    await scheduler.schedule([run_pk])
    assert scheduler.queued[run_pk] == 40 >= QUEUED_TO_HOLD  # as its pass left it
    scheduler.last_pass[run_pk] = time.monotonic()  # that pass just now
    before = utcnow()
    assert scheduler._due_now([run_pk]) == []  # an end right after: held
    assert before + timedelta(seconds=HELD_GAP_S * 0.5) < scheduler.timers[run_pk] \
        <= utcnow() + timedelta(seconds=HELD_GAP_S)
    await db.execute("UPDATE task_instance SET state = 'success' WHERE run_pk = $1"
                     " AND map_index < 30", run_pk)
    scheduler.last_pass[run_pk] -= HELD_GAP_S
    await scheduler.schedule(scheduler._due_now([run_pk]))
    assert scheduler.queued[run_pk] == 10  # too few to hold the next pass back
    assert scheduler._due_now([run_pk]) == [run_pk]
    await db.execute("UPDATE task_instance SET state = 'success' WHERE run_pk = $1", run_pk)
    await scheduler.schedule([run_pk])
    assert run_pk not in scheduler.queued  # the run ended: nothing kept
