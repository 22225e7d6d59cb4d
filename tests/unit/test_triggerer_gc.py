"""The triggerer and Python's cyclic collector: sleeping triggers frozen, out of full passes;
what ended triggers leave behind counted and thawed; each collection timed.

The collector is process-wide: every test starts from nothing frozen and leaves nothing
frozen (:func:`thawed`).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import weakref
from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from shared.db import q
from tests.unit.test_triggerer_claims import (
    _wait,
    make_deferred,
    make_run,
    moment_kwargs,
    running_triggerer,
    warm_up_trigger_decoding,
)
from triggerer import daemon
from triggerer.gc_control import CollectionTimer, GcControl

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def thawed():
    gc.unfreeze()
    yield
    gc.unfreeze()


class Node:
    """A stand-in for a trigger's objects: two of them refer to each other."""

    def __init__(self) -> None:
        self.other = None


def started_and_frozen(control: GcControl, n: int) -> list[Node]:
    """``n`` triggers' stand-ins (reference cycles), started and frozen as the daemon does."""
    live = cycles(n)
    for _ in range(n):
        control.started()
    control.freeze_started(running=n)
    return live


def cycles(n: int) -> list[Node]:
    nodes = []
    for _ in range(n):
        a, b = Node(), Node()
        a.other, b.other = b, a
        nodes.append(a)
    return nodes


def tracked_ids() -> set[int]:
    """Ids of the objects the collector's generations hold (frozen ones are in none)."""
    return {id(o) for o in gc.get_objects()}


# --- the pieces ----------------------------------------------------------------------
def test_each_full_collection_is_timed_and_logged():
    timer = CollectionTimer().install()
    try:
        gc.collect()
        with capture_logs() as lines:
            timer.flush()
    finally:
        timer.remove()
    full = [line for line in lines if line["event"] == "gc_collection" and line["generation"] == 2]
    assert len(full) == 1
    assert full[0]["took_ms"] >= 0 and full[0]["collected"] >= 0
    assert timer.count[2] == 1 and timer.seconds[2] > 0
    assert timer not in gc.callbacks


def test_started_objects_are_frozen_out_of_the_generations_and_freed_when_dropped():
    control = GcControl(freeze_batch=10)
    control.start()
    try:
        live = cycles(1000)
        garbage = cycles(500)
        dead = weakref.ref(garbage[0])
        del garbage  # unreachable cycles when the freeze comes: collected, never frozen
        for _ in range(len(live)):
            control.started()
        control.tick(running=len(live))
        assert control.freezes == 1 and control.unfrozen == 0
        assert dead() is None
        assert not {id(n) for n in live} & tracked_ids()  # out of every full pass
        assert control.objects_per_trigger >= 2  # each stand-in holds two objects
        frozen = gc.get_freeze_count()
        # a frozen object without a cycle is freed by its count, frozen or not
        single = live.pop()
        single.other.other = None
        del single
        assert gc.get_freeze_count() == frozen - 2
    finally:
        control.stop()
    assert gc.get_freeze_count() == 0


def test_cycles_left_by_frozen_objects_are_thawed_once_they_outnumber_the_live_ones():
    # the counting check whatever this process holds (a whole test session: millions)
    control = GcControl(leak_floor=100, check_min_ended=10, cheap_check_objects=10**12)
    control.start()
    try:
        live = started_and_frozen(control, 1000)
        # 300 of them end as reference cycles: frozen, nothing frees them
        ended = [live.pop() for _ in range(300)]
        refs = [weakref.ref(n) for n in ended]
        del ended
        for _ in refs:
            control.ended()
        assert all(r() is not None for r in refs)
        frozen, unexplained = control.leaked(running=len(live))
        assert unexplained >= 500  # two objects each, less what the average puts on the live
        # fewer than the 700 still running hold: not worth a full pass yet
        assert control.thaw_if_leaking(running=len(live)) is False
        assert control.thaws == 0

        more = [live.pop() for _ in range(500)]  # 800 ended, 200 running
        refs += [weakref.ref(n) for n in more]
        del more
        for _ in range(500):
            control.ended()
        control.tick(running=len(live))  # the check is due: 500 ended >= 200 running
        assert control.checks == 2 and control.thaws == 1
        assert all(r() is None for r in refs)  # every leaked cycle freed
        assert not {id(n) for n in live} & tracked_ids()  # the live ones frozen again
        assert control.leaked(running=len(live))[1] == 0
    finally:
        control.stop()


def test_with_many_running_only_memory_that_stays_makes_a_leak_check():
    """Past the cheap size, the frozen list is walked only when the allocated blocks did
    not come down with the triggers that ended."""
    control = GcControl(leak_floor=100, leak_floor_blocks=1000, cheap_check_objects=0)
    control.start()
    try:
        live = started_and_frozen(control, 3000)
        assert control.blocks_per_trigger >= 2
        # 1000 end and are freed (their cycle broken, as a trigger's task and scope are)
        for _ in range(1000):
            node = live.pop()
            node.other.other = None
            control.ended()
        del node
        control.tick(running=len(live))
        assert control.checks == 0  # memory came down: no walk
        # 1500 more end as frozen cycles: their memory stays, a check walks, a thaw frees
        ended = [weakref.ref(live.pop()) for _ in range(1500)]
        for _ in ended:
            control.ended()
        control.tick(running=len(live))
        assert control.checks == 1 and control.thaws == 1
        assert all(r() is None for r in ended)
    finally:
        control.stop()


# --- the triggerer, real PostgreSQL and Redis -------------------------------------------
async def _round(db, trig, run_pk: int, n: int, name: str) -> None:
    """``n`` DateTimeTriggers claimed, frozen while sleeping, then ended: half fire, half
    are cancelled because their instance moved on (their task sees the cancellation)."""
    due = datetime.now(UTC) + timedelta(seconds=2)
    async with db.transaction():  # claimed together, frozen together
        made = [await make_deferred(db, run_pk, f"{name}{i}", kwargs=moment_kwargs(
            due if i % 2 == 0 else due + timedelta(hours=1))) for i in range(n)]
    freezes = trig.gc.freezes
    await _wait(lambda: asyncio.sleep(0, len(trig.running) == n), 10, f"{n} triggers running")
    await _wait(lambda: asyncio.sleep(0, trig.gc.freezes > freezes and trig.gc.unfrozen == 0),
                10, "the running triggers frozen")
    assert not {id(s) for s in trig.running.values()} & tracked_ids()
    for ti_id, trig_id in made[1::2]:
        await db.fetchval(q("fail_expired_deferral"), ti_id, trig_id)

    async def ended():
        left = await db.fetchval("SELECT count(*) FROM task_instance WHERE run_pk = $1"
                                 " AND state = 'deferred'", run_pk)
        return left == 0 and not trig.running and not trig._tasks and trig._unwritten == 0

    await _wait(ended, 20, "every trigger fired or cancelled")


async def test_ended_triggers_leave_nothing_frozen(db, db_url, redis_url, stream_prefix,
                                                   monkeypatch):
    """Frozen while they sleep, a trigger's objects still go when it ends, fired or
    cancelled: round after round the frozen objects come back to the same count, and a
    full pass over everything unfrozen finds no garbage left by them."""
    warm_up_trigger_decoding()
    monkeypatch.setattr(daemon, "GC_TICK_S", 0.05)
    run_pk = await make_run(db)
    n = 200
    async with running_triggerer(db_url, redis_url, stream_prefix,
                                 triggerer_capacity=n, triggerer_heartbeat_s=0.2) as trig:
        trig.gc.freeze_batch = n
        frozen = []
        for name in "abcd":  # the first two also import and cache what triggers need
            await _round(db, trig, run_pk, n, name)
            gc.collect()
            frozen.append(gc.get_freeze_count())
        per_trigger = trig.gc.objects_per_trigger
        assert per_trigger >= 10  # what a sleeping trigger holds was frozen
        # what each later round of 200 ended triggers left frozen: leaked triggers would
        # leave what they held (about 40 objects each, 8,000 a round) every round; the
        # process's own caches grow by 0 to 400 objects a round (measured)
        growth = [after - before for before, after in itertools.pairwise(frozen[1:])]
        assert min(growth) < n, (frozen, per_trigger)
        assert sum(growth) < per_trigger * n / 10, (frozen, per_trigger)
        assert trig.gc.thaws == 0
        gc.unfreeze()
        assert gc.collect() < n / 10  # no cycles left behind to leak while frozen
        gc.freeze()
    assert gc.get_freeze_count() == 0  # the triggerer gave everything back on stop
