"""The triggerer's claims, takeovers and capacity against real PostgreSQL.

The named SQL (``shared.db.q``) is exercised directly on rows written by hand
(a deferred task instance and its trigger, as the Execution API stores a
deferral of Airflow's ``DateTimeTrigger``), then the ``Triggerer`` object
itself runs Airflow's trigger classes with a real pool and Redis.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import anyio
import asyncpg
import pytest
from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk.serde import serialize

from shared import bus
from shared.config import Settings
from shared.daemon import Lifecycle
from shared.db import _init_connection, create_pool, q
from triggerer.daemon import Triggerer, owned_ids_query

pytestmark = pytest.mark.timeout(60)

DATETIME_TRIGGER = "airflow.providers.standard.triggers.temporal.DateTimeTrigger"


# --- rows -------------------------------------------------------------------------
async def make_run(db: asyncpg.Connection, dag_id: str = "d", run_id: str = "r1") -> int:
    await db.execute(
        "INSERT INTO dag (dag_id, fileloc, source_hash, serialized) VALUES ($1, 'x.py', 'h', '{}')"
        " ON CONFLICT DO NOTHING", dag_id)
    return await db.fetchval(
        "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state, start_date)"
        " VALUES ($1, $2, 'manual', now(), 'running', now()) RETURNING id", dag_id, run_id)


def moment_kwargs(moment: datetime) -> dict:
    """A DateTimeTrigger's kwargs as the Task SDK sends them on deferral (its serde)."""
    classpath, kwargs = DateTimeTrigger(moment=moment).serialize()
    assert classpath == DATETIME_TRIGGER
    return serialize(kwargs)


async def make_deferred(db: asyncpg.Connection, run_pk: int, task_id: str, *, priority: int = 1,
                        classpath: str = DATETIME_TRIGGER, kwargs: dict | None = None,
                        timeout: datetime | None = None) -> tuple[int, int]:
    """A task instance in state deferred and its trigger row; returns (ti_id, trigger_id)."""
    if kwargs is None:
        kwargs = moment_kwargs(datetime.now(UTC) + timedelta(hours=1))
    ti_id = await db.fetchval(
        "INSERT INTO task_instance (run_pk, task_id, state, try_number, max_tries, start_date,"
        " next_method, next_kwargs, trigger_timeout)"
        " VALUES ($1, $2, 'deferred', 1, 0, now(), 'execute_complete', $3::json, $4) RETURNING id",
        run_pk, task_id, {"note": task_id}, timeout)
    trigger_id = await db.fetchval(
        "INSERT INTO trigger (classpath, kwargs, ti_id, priority) VALUES ($1, $2::json, $3, $4)"
        " RETURNING id", classpath, kwargs, ti_id, priority)
    await db.execute("UPDATE task_instance SET trigger_id = $2 WHERE id = $1", ti_id, trigger_id)
    return ti_id, trigger_id


async def register(db: asyncpg.Connection, pid: int = 1, capacity: int = 1000) -> int:
    return await db.fetchval(q("register_triggerer"), "host", pid, capacity)


async def claim(db: asyncpg.Connection, triggerer_id: int, limit: int) -> list[int]:
    return [r["id"] for r in await db.fetch(q("claim_triggers"), triggerer_id, limit)]


async def owners(db: asyncpg.Connection) -> dict[int, int | None]:
    return {r["id"]: r["triggerer_id"] for r in await db.fetch("SELECT id, triggerer_id FROM trigger")}


async def connect(db_url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(db_url)
    await _init_connection(conn)
    return conn


# --- the SQL ----------------------------------------------------------------------
async def test_claim_respects_the_limit(db):
    run_pk = await make_run(db)
    trig_ids = [(await make_deferred(db, run_pk, f"t{i}"))[1] for i in range(5)]
    me = await register(db)

    first = await claim(db, me, 2)
    assert sorted(first) == trig_ids[:2]
    second = await claim(db, me, 10)
    assert sorted(second) == trig_ids[2:]
    assert await claim(db, me, 10) == []
    assert set((await owners(db)).values()) == {me}


async def test_claim_order_is_priority_then_age(db):
    run_pk = await make_run(db)
    ids = {}
    for name, priority in [("a", 1), ("b", 5), ("c", 1), ("d", 5), ("e", 3)]:
        ids[name] = (await make_deferred(db, run_pk, name, priority=priority))[1]
    me = await register(db)

    order = [await claim(db, me, 1) for _ in range(6)]
    assert order == [[ids["b"]], [ids["d"]], [ids["e"]], [ids["a"]], [ids["c"]], []]


async def test_load_triggers_returns_what_the_triggerer_needs(db):
    run_pk = await make_run(db, "dag1", "run1")
    deadline = datetime.now(UTC) + timedelta(minutes=5)
    ti_id, trig_id = await make_deferred(db, run_pk, "wait", timeout=deadline)
    rows = await db.fetch(q("load_triggers"), [trig_id])
    assert len(rows) == 1
    row = dict(rows[0])
    assert (row["id"], row["ti_id"], row["dag_id"], row["run_id"], row["task_id"],
            row["map_index"], row["try_number"], row["run_pk"], row["classpath"]) == \
        (trig_id, ti_id, "dag1", "run1", "wait", -1, 1, run_pk, DATETIME_TRIGGER)
    assert row["trigger_timeout"] == deadline
    assert isinstance(row["kwargs"], str)  # serde.loads reads the text as stored
    # a trigger whose instance moved on (no longer deferred) is not loaded
    await db.execute("UPDATE task_instance SET state = 'scheduled' WHERE id = $1", ti_id)
    assert await db.fetch(q("load_triggers"), [trig_id]) == []


async def test_concurrent_claims_never_share_a_trigger(db, db_url):
    run_pk = await make_run(db)
    trig_ids = {(await make_deferred(db, run_pk, f"t{i}"))[1] for i in range(5)}
    a_id, b_id = await register(db, 1), await register(db, 2)
    a, b = await connect(db_url), await connect(db_url)
    try:
        ta = a.transaction()
        await ta.start()
        got_a = await claim(a, a_id, 2)  # holds its row locks until commit
        tb = b.transaction()
        await tb.start()
        with anyio.fail_after(5):  # SKIP LOCKED: never waits on a's locks
            got_b = await claim(b, b_id, 10)
        assert len(got_a) == 2 and len(got_b) == 3
        assert not set(got_a) & set(got_b)
        assert set(got_a) | set(got_b) == trig_ids
        await ta.commit()
        await tb.commit()
    finally:
        await a.close()
        await b.close()
    found = await owners(db)
    assert {t for t, o in found.items() if o == a_id} == set(got_a)
    assert {t for t, o in found.items() if o == b_id} == set(got_b)
    # nothing left for a third claimer, and claimed triggers are not claimed again
    c_id = await register(db, 3)
    assert await claim(db, c_id, 10) == []


async def test_rows_locked_by_a_claim_that_rolls_back_come_back(db, db_url):
    run_pk = await make_run(db)
    trig_ids = {(await make_deferred(db, run_pk, f"t{i}"))[1] for i in range(3)}
    a_id, b_id = await register(db, 1), await register(db, 2)
    a = await connect(db_url)
    try:
        ta = a.transaction()
        await ta.start()
        assert len(await claim(a, a_id, 10)) == 3
        assert await claim(db, b_id, 10) == []  # all locked: skipped, not waited on
        await ta.rollback()  # the claimer died before committing
    finally:
        await a.close()
    assert set(await claim(db, b_id, 10)) == trig_ids


async def test_dead_triggerer_triggers_are_taken_over(db):
    run_pk = await make_run(db)
    trig_ids = {(await make_deferred(db, run_pk, f"t{i}"))[1] for i in range(3)}
    dead, alive = await register(db, 1), await register(db, 2)
    assert set(await claim(db, dead, 10)) == trig_ids
    await db.execute("UPDATE triggerer SET heartbeat_at = now() - interval '10 seconds'"
                     " WHERE id = $1", dead)

    # while its row exists, its triggers are its own, however stale its heartbeat
    assert await claim(db, alive, 10) == []
    released = [r["id"] for r in await db.fetch(q("release_dead_triggerers"), 3.0)]
    assert released == [dead]  # the live one (fresh heartbeat) stays
    assert await db.fetchval("SELECT count(*) FROM triggerer") == 1
    assert set((await owners(db)).values()) == {None}
    assert await db.fetchval(q("heartbeat_triggerer"), dead) is None  # it must re-register
    assert await db.fetchval(q("heartbeat_triggerer"), alive) == alive

    assert set(await claim(db, alive, 10)) == trig_ids
    assert set((await owners(db)).values()) == {alive}
    assert {r["id"] for r in await db.fetch(q("owned_triggers"), alive)} == trig_ids


async def test_unregister_hands_triggers_back(db):
    run_pk = await make_run(db)
    trig_ids = {(await make_deferred(db, run_pk, f"t{i}"))[1] for i in range(3)}
    leaving, other = await register(db, 1), await register(db, 2)
    assert set(await claim(db, leaving, 10)) == trig_ids
    await db.execute(q("unregister_triggerer"), leaving)
    assert await db.fetchval("SELECT count(*) FROM triggerer WHERE id = $1", leaving) == 0
    assert set((await owners(db)).values()) == {None}
    assert await db.fetchval(q("unclaimed_triggers_exist")) is True
    assert set(await claim(db, other, 10)) == trig_ids


async def test_resume_ti_first_event_wins(db):
    run_pk = await make_run(db)
    ti_id, trig_id = await make_deferred(db, run_pk, "wait")
    other_ti, other_trig = await make_deferred(db, run_pk, "other")

    # a stale trigger id (some other trigger) resumes nothing
    assert await db.fetchval(q("resume_ti"), ti_id, other_trig, {"event": 0}, None) is None
    first = await db.fetchval(q("resume_ti"), ti_id, trig_id, {"note": "wait", "event": 1}, None)
    assert first == run_pk
    row = await db.fetchrow("SELECT state, next_method, next_kwargs, trigger_id, trigger_timeout"
                            " FROM task_instance WHERE id = $1", ti_id)
    assert dict(row) == {"state": "scheduled", "next_method": "execute_complete",
                         "next_kwargs": {"note": "wait", "event": 1}, "trigger_id": None,
                         "trigger_timeout": None}
    # a second event of the same trigger (or a failure after it) changes nothing
    assert await db.fetchval(q("resume_ti"), ti_id, trig_id, {"event": 2}, None) is None
    assert await db.fetchval(q("resume_ti"), ti_id, trig_id, {"error": "x"}, "__fail__") is None
    assert await db.fetchrow(q("end_deferred_ti"), ti_id, trig_id, "success") is None
    row = await db.fetchrow("SELECT state, next_method, next_kwargs FROM task_instance"
                            " WHERE id = $1", ti_id)
    assert (row["state"], row["next_method"], row["next_kwargs"]) == \
        ("scheduled", "execute_complete", {"note": "wait", "event": 1})
    # the other instance is untouched
    assert await db.fetchval("SELECT state FROM task_instance WHERE id = $1", other_ti) == "deferred"


async def test_end_deferred_ti_first_event_wins(db):
    run_pk = await make_run(db)
    ti_id, trig_id = await make_deferred(db, run_pk, "wait")
    done = await db.fetchrow(q("end_deferred_ti"), ti_id, trig_id, "skipped")
    assert (done["run_pk"], done["task_id"], done["map_index"]) == (run_pk, "wait", -1)
    assert await db.fetchrow(q("end_deferred_ti"), ti_id, trig_id, "success") is None
    assert await db.fetchval(q("resume_ti"), ti_id, trig_id, {"event": 1}, None) is None
    row = await db.fetchrow("SELECT state, end_date, trigger_id FROM task_instance WHERE id = $1",
                            ti_id)
    assert row["state"] == "skipped" and row["end_date"] is not None and row["trigger_id"] is None


async def test_owned_triggers_drop_instances_that_moved_on(db):
    run_pk = await make_run(db)
    ti_a, trig_a = await make_deferred(db, run_pk, "a")
    _, trig_b = await make_deferred(db, run_pk, "b")
    me = await register(db)
    await claim(db, me, 10)
    assert {r["id"] for r in await db.fetch(q("owned_triggers"), me)} == {trig_a, trig_b}
    await db.fetchval(q("resume_ti"), ti_a, trig_a, {"event": 1}, None)
    assert {r["id"] for r in await db.fetch(q("owned_triggers"), me)} == {trig_b}


async def test_the_heartbeat_reads_owned_triggers_as_one_array(db):
    """The same ids as ``owned_triggers``, in one value (no row object per trigger for the
    collector), and an empty list when none is owned."""
    run_pk = await make_run(db)
    ti_a, trig_a = await make_deferred(db, run_pk, "a")
    _, trig_b = await make_deferred(db, run_pk, "b")
    me = await register(db)
    assert await db.fetchval(owned_ids_query(), me) == []
    await claim(db, me, 10)
    assert sorted(await db.fetchval(owned_ids_query(), me)) == [trig_a, trig_b]
    await db.fetchval(q("resume_ti"), ti_a, trig_a, {"event": 1}, None)
    assert await db.fetchval(owned_ids_query(), me) == [trig_b]


# --- the Triggerer object -----------------------------------------------------------
@asynccontextmanager
async def running_triggerer(db_url: str, redis_url: str, prefix: str, **settings):
    """A ``Triggerer`` wired like ``triggerer.daemon.run`` but inside the test's loop."""
    settings = Settings(database_url=db_url, redis_url=redis_url, stream_prefix=prefix,
                        **{"triggerer_heartbeat_s": 0.2, **settings})
    pool = await create_pool(db_url, max_size=5)
    redis = bus.connect(redis_url)
    life = Lifecycle("triggerer-test")
    try:
        trig = Triggerer(settings, pool, redis, life)
        await trig.consumer.ensure_groups()
        await trig.register()
        async with anyio.create_task_group() as tg:
            trig.start_loops(tg)
            tg.start_soon(trig.claim_loop, tg)
            try:
                yield trig
            finally:
                life.stopping.set()  # shutdown: cancel triggers, unregister, end the group
    finally:
        with anyio.CancelScope(shield=True):
            await redis.aclose()
            await pool.close()


async def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.02)


def warm_up_trigger_decoding() -> None:
    """Import what decoding a trigger row needs, as a triggerer has after its first trigger:
    that first import (Airflow's decoders, seconds on a loaded machine) is not what the
    timing of these triggers measures."""
    from triggerer.airflow_triggers import decode_kwargs

    decode_kwargs(moment_kwargs(datetime.now(UTC)))


async def test_triggerer_runs_at_most_capacity_and_claims_more_as_triggers_fire(
        db, db_url, redis_url, stream_prefix, monkeypatch):
    warm_up_trigger_decoding()
    run_pk = await make_run(db)
    start = datetime.now(UTC) + timedelta(seconds=1.5)
    tis = []
    for i in range(5):  # priorities equal: claimed by age; due 0.3 s apart
        tis.append(await make_deferred(db, run_pk, f"t{i}",
                                       kwargs=moment_kwargs(start + timedelta(seconds=0.3 * i))))
    trig_ids = [t for _, t in tis]
    started: list[tuple[int, set[int]]] = []  # each trigger as it starts, and what runs then
    run_trigger = Triggerer.run_trigger

    async def recorded(self, row, scope):
        started.append((row["id"], set(self.running)))
        await run_trigger(self, row, scope)

    monkeypatch.setattr(Triggerer, "run_trigger", recorded)

    async with running_triggerer(db_url, redis_url, stream_prefix, triggerer_capacity=2) as trig:
        async def all_done():
            states = await db.fetch("SELECT state FROM task_instance WHERE run_pk = $1", run_pk)
            # the counter moves once the batch's connection is back in the pool, a
            # moment after the commit this session can already see
            return trig.fired >= 5 and all(r["state"] == "scheduled" for r in states)

        # the first two claimed are the two oldest, the others stay unclaimed meanwhile
        await _wait(lambda: asyncio.sleep(0, len(trig.running) == 2), 5, "two triggers running")
        assert set(trig.running) == set(trig_ids[:2])
        assert [(await owners(db))[t] for t in trig_ids[2:]] == [None, None, None]
        await _wait(all_done, 15, "all five triggers to fire")
        assert trig.fired == 5

    # started once each, oldest first; each later one only once an earlier one had ended
    assert [t for t, _ in started] == trig_ids
    assert started[1][1] == set(trig_ids[:2])
    assert all(len(running) <= 2 for _, running in started)
    rows = await db.fetch("SELECT next_kwargs FROM task_instance WHERE run_pk = $1 ORDER BY id",
                          run_pk)
    assert [r["next_kwargs"]["note"] for r in rows] == [f"t{i}" for i in range(5)]
    assert all("event" in r["next_kwargs"] for r in rows)
    assert await db.fetchval("SELECT count(*) FROM trigger") == 0
    assert await db.fetchval("SELECT count(*) FROM triggerer") == 0  # unregistered on stop


async def test_triggerer_takes_over_from_a_dead_one_and_cancels_lost_triggers(
        db, db_url, redis_url, stream_prefix):
    warm_up_trigger_decoding()
    run_pk = await make_run(db)
    dead = await register(db, pid=999_999)
    soon = datetime.now(UTC) + timedelta(seconds=0.5)
    ti_a, trig_a = await make_deferred(db, run_pk, "a", kwargs=moment_kwargs(soon))
    ti_b, trig_b = await make_deferred(db, run_pk, "b")  # an hour away
    assert set(await claim(db, dead, 10)) == {trig_a, trig_b}
    await db.execute("UPDATE triggerer SET heartbeat_at = now() - interval '1 minute'")

    async with running_triggerer(db_url, redis_url, stream_prefix, triggerer_heartbeat_timeout_s=3) as trig:
        async def taken_over():
            return set(trig.running) >= {trig_b}

        await _wait(taken_over, 5, "the dead triggerer's triggers to be claimed")
        assert await db.fetchval("SELECT count(*) FROM triggerer WHERE id = $1", dead) == 0

        async def a_fired():
            return await db.fetchval("SELECT state FROM task_instance WHERE id = $1", ti_a) \
                == "scheduled"

        await _wait(a_fired, 5, "the taken-over trigger to fire")
        # the instance of b moves on without its trigger (e.g. the scheduler's timeout
        # backstop); the heartbeat notices and cancels the running trigger
        await db.fetchval(q("fail_expired_deferral"), ti_b, trig_b)

        async def b_cancelled():
            return trig_b not in trig.running

        await _wait(b_cancelled, 5, "the trigger of a moved-on instance to be cancelled")
        assert trig.fired == 1


async def test_triggerer_reregisters_when_its_row_was_released(db, db_url, redis_url, stream_prefix):
    run_pk = await make_run(db)
    _, trig_id = await make_deferred(db, run_pk, "a")
    async with running_triggerer(db_url, redis_url, stream_prefix) as trig:
        await _wait(lambda: asyncio.sleep(0, trig_id in trig.running), 5, "the trigger to run")
        first_id = trig.id
        # another triggerer judged it dead: its row goes, its triggers are unassigned
        await db.execute("DELETE FROM triggerer WHERE id = $1", first_id)

        async def back():
            owner = (await owners(db))[trig_id]
            return trig.id != first_id and owner == trig.id and trig_id in trig.running

        await _wait(back, 5, "re-registration and re-claim")
        assert await db.fetchval("SELECT count(*) FROM triggerer") == 1


# --- 100,000 triggers: paged claims, chunked starts, plain tasks ----------------------------
@asynccontextmanager
async def bare_triggerer(db_url: str, redis_url: str, prefix: str, **settings):
    """A registered ``Triggerer`` whose loops are not started: claims are called by hand."""
    settings = Settings(database_url=db_url, redis_url=redis_url, stream_prefix=prefix, **settings)
    pool = await create_pool(db_url, max_size=3)
    redis = bus.connect(redis_url)
    try:
        trig = Triggerer(settings, pool, redis, Lifecycle("triggerer-test"))
        await trig.register()
        try:
            yield trig
        finally:
            await trig.stop_triggers(5)
    finally:
        with anyio.CancelScope(shield=True):
            await redis.aclose()
            await pool.close()


async def test_a_claim_after_its_row_was_released_registers_anew_and_claims(
        db, db_url, redis_url, stream_prefix):
    """The race the heartbeat does not always win: another triggerer released this one's row
    (judged dead) just before a claim. The claim registers anew, once, and claims; before,
    the foreign key refused the claim and the exception ended the daemon."""
    run_pk = await make_run(db)
    _, trig_id = await make_deferred(db, run_pk, "a")
    async with bare_triggerer(db_url, redis_url, stream_prefix) as trig:
        first_id = trig.id
        await db.execute("DELETE FROM triggerer WHERE id = $1", first_id)
        await trig.claim()
        assert trig.id != first_id and trig_id in trig.running
        assert (await owners(db))[trig_id] == trig.id
        await trig.reregister(first_id)  # the heartbeat finding the same loss later: no-op
        assert await db.fetchval("SELECT array_agg(id) FROM triggerer") == [trig.id]


async def test_claims_come_in_pages_and_each_page_starts_in_chunks(
        db, db_url, redis_url, stream_prefix, monkeypatch):
    """One claim takes up to capacity, a page per transaction; a page's triggers start a
    chunk at a time, the loop running those already started in between."""
    import triggerer.daemon as daemon

    monkeypatch.setattr(daemon, "CLAIM_PAGE", 3)
    monkeypatch.setattr(daemon, "START_CHUNK", 2)
    run_pk = await make_run(db)
    trig_ids = [(await make_deferred(db, run_pk, f"t{i}"))[1] for i in range(7)]
    pages: list[int] = []
    fetch = asyncpg.connection.Connection.fetch

    async def counted(self, query, *args, **kwargs):
        if query == q("claim_triggers"):
            pages.append(args[1])
        return await fetch(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.connection.Connection, "fetch", counted)
    started: list[tuple[int, set[int]]] = []
    run_trigger = Triggerer.run_trigger

    async def recorded(self, row, scope):
        started.append((row["id"], set(self.running)))
        await run_trigger(self, row, scope)

    monkeypatch.setattr(Triggerer, "run_trigger", recorded)
    async with bare_triggerer(db_url, redis_url, stream_prefix, triggerer_capacity=6) as trig:
        await trig.claim()
        assert pages == [3, 3]  # capacity 6: two full pages, then no room for a third
        assert set(trig.running) == set(trig_ids[:6])
        assert [(await owners(db))[t] for t in trig_ids] == [trig.id] * 6 + [None]
        await _wait(lambda: asyncio.sleep(0, len(started) == 6), 5, "six triggers started")
        # the first two started before the third was even created
        assert started[0][1] == set(trig_ids[:2])
        assert len(trig._tasks) == 6
    assert not trig.running and not trig._tasks  # stopped, their tasks ended


async def test_an_error_escaping_a_trigger_task_ends_the_daemon(
        db, db_url, redis_url, stream_prefix, monkeypatch):
    """A plain task's unexpected error is raised in the daemon's task group, as a task
    group's child's would be, instead of being lost with the task."""
    run_pk = await make_run(db)
    await make_deferred(db, run_pk, "t")

    async def broken(self, row):
        raise RuntimeError("a bug in the triggerer")

    monkeypatch.setattr(Triggerer, "_run", broken)
    async with bare_triggerer(db_url, redis_url, stream_prefix) as trig:
        with pytest.raises(ExceptionGroup) as caught:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(trig.crash_loop)
                    await trig.claim()
        assert [str(e) for e in caught.value.exceptions] == ["a bug in the triggerer"]
