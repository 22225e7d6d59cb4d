"""Python's cyclic collector in the triggerer: each collection timed, sleeping triggers
kept out of its full passes.

A full pass (generation 2) walks every tracked object. At 100,000 sleeping triggers
that is about 2 M objects and 1 to 3 s during which no timer fires. CPython starts one
whenever the objects promoted since the last one reach a quarter of those it kept, so
claiming triggers makes them, whatever else the loop has to do.

Sluice freezes what it has started (:meth:`GcControl.freeze_started`): once the
triggers of a claim are sleeping, a pass over what is not yet frozen drops the garbage
of their start and ``gc.freeze()`` moves the survivors out of every generation. Full
passes then walk only what is not frozen (milliseconds), and stay automatic: the
collector is never switched off. A trigger that wakes often makes new objects each
time; when an automatic full pass over them grows long, they are frozen too
(:meth:`GcControl.sweep`).

A frozen object is still freed by its reference count, which is how a trigger's
objects go when it ends (its task, coroutine, scope and timer unlink); only a
reference cycle through a frozen object outlives it. Those are caught by counting:
:meth:`GcControl.thaw_if_leaking` compares the frozen objects with what the running
triggers hold, and when the excess outgrows what they hold (or a floor) unfreezes and
runs the one full pass that frees them. Memory stays within about twice the live set
plus the floor, and the pass runs when the leak has paid for it.
"""

from __future__ import annotations

import gc
import sys
import time
from collections import deque

import structlog

log = structlog.get_logger()

#: a collection at least this long is logged (and every one of the oldest generation)
SLOW_COLLECTION_S = 0.02
#: frozen objects no running trigger explains, tolerated before a thaw, whatever the count
LEAK_FLOOR = 200_000
#: logged lines a flush writes at most (the rest are counted), so a burst never floods
MAX_LINES_PER_FLUSH = 20


class CollectionTimer:
    """A ``gc.callbacks`` entry that times each collection per generation.

    The callback only records (it may run inside any allocation, the logger's included);
    :meth:`flush` writes ``gc_collection`` lines from the event loop: each full pass and
    each collection of at least :data:`SLOW_COLLECTION_S`.
    """

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self.last = [0.0, 0.0, 0.0]  # seconds the latest collection of each generation took
        self._started = 0.0
        self._pending: deque[tuple[float, int, float, int, int]] = deque(maxlen=1000)

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        gen = info["generation"]
        self.count[gen] += 1
        self.seconds[gen] += took
        self.longest[gen] = max(self.longest[gen], took)
        self.last[gen] = took
        if gen == 2 or took >= SLOW_COLLECTION_S:
            self._pending.append((time.time() - took, gen, took, info["collected"],
                                  info["uncollectable"]))

    def install(self) -> CollectionTimer:
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        return self

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)

    def flush(self) -> None:
        """Log the collections recorded since the last flush."""
        written = 0
        while self._pending:
            at, gen, took, collected, uncollectable = self._pending.popleft()
            if written == MAX_LINES_PER_FLUSH:
                log.info("gc_collections_unlogged", count=len(self._pending) + 1)
                self._pending.clear()
                break
            log.info("gc_collection", generation=gen, took_ms=round(took * 1000, 1),
                     collected=collected, uncollectable=uncollectable, started_at=round(at, 3))
            written += 1

    def totals(self) -> dict:
        """Collections per generation, their total and longest milliseconds, so far."""
        return {f"gen{g}": {"count": self.count[g], "total_ms": round(self.seconds[g] * 1000, 1),
                            "longest_ms": round(self.longest[g] * 1000, 1)} for g in range(3)}


#: triggers started since the last freeze that make the next one due at once
FREEZE_BATCH = 1000
#: how long fewer than :data:`FREEZE_BATCH` started triggers wait for their freeze
FREEZE_EVERY_S = 30.0
#: triggers ended since the last leak check that make the next one due, at least
CHECK_MIN_ENDED = 10_000
#: frozen objects a leak check walks (10 to 40 ms) that let it run whenever it is due;
#: beyond, it runs only when the allocated memory says something may leak
CHEAP_CHECK_OBJECTS = 400_000
#: an automatic full pass this long makes the next tick freeze what it kept (a trigger that
#: wakes often, as the provider's DateTimeTrigger polling each second, makes new objects
#: each time, which outlive the young collections and make the full passes long again)
SWEEP_AFTER_S = 0.05
#: allocated memory blocks no running trigger explains, tolerated before a leak check
#: when that check is not cheap
LEAK_FLOOR_BLOCKS = 500_000


class GcControl:
    """Freeze started triggers, count what the frozen ones leak, thaw when it is worth it.

    The daemon calls :meth:`started` and :meth:`ended` per trigger and :meth:`tick`
    about once a second. Costs: a freeze runs a full pass over the objects not yet
    frozen (what the triggers started since the last freeze made) and lists the
    survivors; a leak check walks the frozen list (25 to 75 ms per million objects),
    so with many triggers running it waits until Python's allocated memory blocks
    (``sys.getallocatedblocks()``, under a millisecond) outgrow what the running
    triggers hold by as much again; a thaw is one full pass over everything.
    """

    def __init__(self, timer: CollectionTimer | None = None, *, leak_floor: int = LEAK_FLOOR,
                 leak_floor_blocks: int = LEAK_FLOOR_BLOCKS, freeze_batch: int = FREEZE_BATCH,
                 check_min_ended: int = CHECK_MIN_ENDED,
                 cheap_check_objects: int = CHEAP_CHECK_OBJECTS) -> None:
        self.timer = timer or CollectionTimer()
        self.leak_floor = leak_floor
        self.leak_floor_blocks = leak_floor_blocks
        self.freeze_batch = freeze_batch
        self.check_min_ended = check_min_ended
        self.cheap_check_objects = cheap_check_objects
        self.base = 0  # frozen objects no running trigger holds (Airflow's imports and the like)
        self.blocks_base = 0  # allocated blocks no running trigger holds
        self.blocks_per_trigger = 0.0
        self.unfrozen = 0  # triggers started since the last freeze
        self.ended_since_check = 0
        self.freezes = self.checks = self.thaws = self.sweeps = 0
        self._full_passes_seen = 0  # the timer's count of full passes at the last freeze
        self._objects_per_trigger = [0, 0]  # objects and triggers of every freeze, for the average
        self._last_freeze = time.monotonic()
        self._started = False

    # --- the daemon's calls -------------------------------------------------------------
    def start(self) -> None:
        """Freeze what exists (Airflow's import-time objects: they live as long as the
        process) and time collections from now on."""
        if self._started:
            return
        self._started = True
        self.timer.install()
        gc.collect()
        gc.freeze()
        self.base = gc.get_freeze_count()
        self.blocks_base = sys.getallocatedblocks()
        log.info("gc_frozen", objects=self.base, triggers=0, frozen=self.base)

    def stop(self) -> None:
        """Give the collector back everything frozen (for a process that lives on)."""
        if self._started:
            self._started = False
            self.timer.remove()
            gc.unfreeze()

    def started(self) -> None:
        self.unfrozen += 1

    def ended(self) -> None:
        self.ended_since_check += 1

    def tick(self, running: int) -> None:
        """Freeze the triggers started and check for leaks, each when due; ``running`` is
        the number of triggers running now."""
        if self.unfrozen >= self.freeze_batch or (
                self.unfrozen and time.monotonic() - self._last_freeze >= FREEZE_EVERY_S):
            self.freeze_started(running)
        elif self.timer.count[2] > self._full_passes_seen and self.timer.last[2] >= SWEEP_AFTER_S:
            self.sweep()
        if not self.ended_since_check:
            return
        if self.base + self.objects_per_trigger * running <= self.cheap_check_objects:
            # due once as many ended as still run, and whenever the last one has ended
            if running == 0 or self.ended_since_check >= max(self.check_min_ended, running):
                self.thaw_if_leaking(running)
        elif self.blocks_unexplained(running) > max(self.leak_floor_blocks,
                                                    self.blocks_per_trigger * running):
            self.thaw_if_leaking(running)

    # --- the work ------------------------------------------------------------------------
    @property
    def objects_per_trigger(self) -> float:
        objects, triggers = self._objects_per_trigger
        return objects / triggers if triggers else 0.0

    def blocks_unexplained(self, running: int) -> float:
        """Allocated memory blocks beyond the base and what ``running`` triggers hold."""
        return sys.getallocatedblocks() - self.blocks_base - self.blocks_per_trigger * running

    def freeze_started(self, running: int) -> int:
        """Collect what is not frozen (the garbage of the starts is never frozen), then
        freeze the survivors: the sleeping triggers. Returns how many objects it froze."""
        started = time.perf_counter()
        gc.collect()
        objects = len(gc.get_objects(generation=2))  # all that survived the full pass
        gc.freeze()
        self._full_passes_seen = self.timer.count[2]
        triggers, self.unfrozen = self.unfrozen, 0
        self._objects_per_trigger[0] += objects
        self._objects_per_trigger[1] += triggers
        if running:
            self.blocks_per_trigger = max(sys.getallocatedblocks() - self.blocks_base, 0) / running
        self._last_freeze = time.monotonic()
        self.freezes += 1
        log.info("gc_frozen", objects=objects, triggers=triggers,
                 took_ms=round((time.perf_counter() - started) * 1000, 1))
        return objects

    def sweep(self) -> int:
        """Freeze what the last automatic full pass kept (it just dropped gen 2's garbage;
        a young collection drops the rest), so the next one does not walk it again.
        Not counted as any trigger's: while it lives it is unexplained, which only makes
        a thaw come sooner. Returns how many objects it froze."""
        started = time.perf_counter()
        gc.collect(1)
        objects = len(gc.get_objects(generation=2))
        gc.freeze()
        self._full_passes_seen = self.timer.count[2]
        self.sweeps += 1
        log.info("gc_swept", objects=objects,
                 took_ms=round((time.perf_counter() - started) * 1000, 1))
        return objects

    def leaked(self, running: int) -> tuple[int, int]:
        """``(frozen objects, those the running frozen triggers do not explain)``."""
        frozen = gc.get_freeze_count()
        explained = round(self.objects_per_trigger * max(running - self.unfrozen, 0))
        return frozen, frozen - self.base - explained

    def thaw_if_leaking(self, running: int) -> bool:
        """Thaw when the frozen objects no running trigger explains outnumber both the floor
        and those the running triggers hold: the pass is paid for by what it frees."""
        started = time.perf_counter()
        frozen, excess = self.leaked(running)
        held = frozen - self.base - excess
        self.ended_since_check = 0
        self.blocks_base = sys.getallocatedblocks() - self.blocks_per_trigger * running
        self.checks += 1
        log.info("gc_leak_checked", frozen=frozen, unexplained=excess, running=running,
                 took_ms=round((time.perf_counter() - started) * 1000, 1))
        if excess <= max(self.leak_floor, held):
            return False
        self.thaw(running)
        return True

    def thaw(self, running: int) -> int:
        """Unfreeze everything, collect it in one full pass, freeze the survivors again.
        Returns the objects the pass freed."""
        started = time.perf_counter()
        before = gc.get_freeze_count()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        frozen = gc.get_freeze_count()
        self.unfrozen = 0
        self.base = frozen - round(self.objects_per_trigger * running)
        self.blocks_base = sys.getallocatedblocks() - self.blocks_per_trigger * running
        self.thaws += 1
        log.warning("gc_thawed", frozen_before=before, frozen=frozen, freed=freed,
                    took_ms=round((time.perf_counter() - started) * 1000, 1))
        return freed
