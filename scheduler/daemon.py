"""The scheduler daemon: parse DAGs, create runs, decide, queue; event-driven.

One loop blocks on the events stream (``XREADGROUP``) until something
happens or the earliest timer (a retry, a schedule interval) is due; then it
schedules every touched run in one transaction and pipelines the queue
messages. A slow repair sweep re-sends what the database says is owed, so a
lost stream message (or all of Redis) costs latency, never work.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import NamedTuple

import anyio
import asyncpg
import structlog

from scheduler.assets import create_asset_runs, sync_references
from scheduler.callbacks import CallbackRequests, CallbackRunner, run_end_reason
from scheduler.counts import CountCache
from scheduler.decide import RunDecision, StateCounts, TIRow, decide
from scheduler.expansion import RunFacts
from scheduler.groups import group_states
from scheduler.limits import Busy, Candidate, pool_problems, select
from scheduler.parsing import FolderParser
from scheduler.past import PastWaker, blocked
from scheduler.runs import create_due_runs, insert_task_instances, task_instance_rows, utcnow
from scheduler.start_trigger import render, run_context, start_args
from shared import bus
from shared.airflow_spec.loading import use_airflow_home
from shared.config import Settings
from shared.daemon import Lifecycle, sd_notify
from shared.dags_folder import require_dags_folder
from shared.db import DB_ERRORS, TRANSIENT_SQL, Continuity, create_pool, q, rederivable_transaction
from shared.logging import configure_logging
from shared.messages import DagsChanged, RunChanged, RunTask, TriggersPending
from shared.metrics import SCHEDULING_PASS_SECONDS, serve_scheduler
from shared.schedules import RunInfo, load_timetables
from shared.serialization import DagSpec
from shared.textcap import cap_error

log = structlog.get_logger()
# a lost connection or a deadlock with another writer: retried, never blamed on a message
TRANSIENT = DB_ERRORS + TRANSIENT_SQL + bus.REDIS_ERRORS
PASS_GAP_PER_TI_S = 5e-7
HELD_GAP_S = 0.05  # ... and 50 ms while the run has QUEUED_TO_HOLD instances queued
QUEUED_TO_HOLD = 32
WINDOW = 512  # schedulable instances of one task read per pass at most (see _read_runs)
MIN_WINDOW = 32  # ... and at least, however few slots are free (see _windows)
LOCKED_RETRY_S = 0.02  # a run another scheduler's pass holds is tried again after this


class RunsRead(NamedTuple):
    """What one ``read_runs`` statement tells a pass about its locked runs."""

    tis: dict[int, list[TIRow]]  # run -> its schedulable instances read
    counts: dict[int, StateCounts]  # run -> task -> state -> instances
    truncated: dict[int, frozenset[str]]  # run -> tasks with more waiting than were read


class Scheduler:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis, lifecycle: Lifecycle):
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.life = lifecycle
        self.streams = bus.Streams(settings.stream_prefix)
        self.consumer = bus.Consumer(redis, [self.streams.events], bus.SCHEDULER_GROUP,
                                     bus.consumer_name("scheduler"),
                                     deadletter=self.streams.deadletter,
                                     count=settings.batch_size,
                                     claim_interval_s=settings.claim_interval_s)
        self.specs: dict[str, DagSpec] = {}
        self.paused: set[str] = set()
        # each DAG's next scheduled run as its timetable planned it (None: no more runs);
        # absent: ask its timetable on the next pass
        self.planned: dict[str, RunInfo | None] = {}
        self.timers: dict[int, datetime] = {}
        self.pending: set[int] = set()
        self.starved: set[int] = set()
        self.dags_dirty = True
        self.pools: dict[str, int] = {}
        self.pool_warned: set[tuple[str, str, str, str]] = set()  # waits for a pool, said once
        self.paused_seen: set[str] = set()  # paused DAGs as the last refresh saw them
        self.run_sizes: dict[int, int] = {}
        self.queued: dict[int, int] = {}  # run -> its instances queued as its last pass left it
        self.last_pass: dict[int, float] = {}
        self._read_scope: anyio.CancelScope | None = None
        self.stats = {"runs_scheduled": 0, "tis_queued": 0}
        self.db_continuity = Continuity()  # zombies are judged only on an unbroken view
        self.callbacks = CallbackRequests()  # owed DAG and task callbacks (scheduler/callbacks.py)
        self.past = PastWaker()  # depends_on_past: a settled run wakes the runs after it
        self.counts = CountCache()  # active runs' instance counts, read as they change
        self.ending: dict[int, set[str]] = {}  # run -> tasks whose instances its last pass ended

    # --- DAG definitions --------------------------------------------------
    async def refresh_dags(self) -> None:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(q("active_dags"))
            await sync_references(conn)  # assets: what the asset-scheduled DAGs wait on
            self.pools = {row["name"]: row["slots"] for row in await conn.fetch(q("pools"))}
            specs, paused = {}, set()
            for row in rows:
                try:
                    specs[row["dag_id"]] = DagSpec.model_validate(row["serialized"])
                except ValueError as exc:
                    log.error("dag_spec_invalid", dag_id=row["dag_id"], error=str(exc))
                    continue
                if row["is_paused"]:
                    paused.add(row["dag_id"])
            for dag_id, spec in specs.items():
                if dag_id not in self.specs or self.specs[dag_id] != spec:
                    self.planned.pop(dag_id, None)  # a changed timetable is asked again
        self.specs, self.paused = specs, paused
        self.dags_dirty = False
        await self._resume_unpaused()

    async def _resume_unpaused(self) -> None:
        """Pause, unpause and pool changes wake us with ``DagsChanged``: the active runs of
        DAGs just unpaused, and the runs limits held back, get a pass now."""
        unpaused, self.paused_seen = self.paused_seen - self.paused, set(self.paused)
        self.pending |= self.starved
        self.starved = set()
        if unpaused:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(q("active_runs_of_dags"), sorted(unpaused))
            self.pending.update(r["id"] for r in rows)

    async def create_scheduled_runs(self, now: datetime) -> datetime | None:
        """Create the scheduled runs due at ``now``; return when the next one is due.

        A DAG's timetable is asked when it is loaded or changed and when one of
        its runs is created (as Airflow's scheduler does); the run it plans is
        created when due, and its ``run_after`` is the moment to wake at. A run
        held back by ``max_active_runs`` is due already: it is planned again on
        the next pass (a run ending wakes the scheduler), never slept for. A DAG
        whose timetable fails is logged and left until it changes.
        """
        earliest: datetime | None = None
        for dag_id, spec in self.specs.items():
            if spec.schedule is None or dag_id in self.paused:
                self.planned.pop(dag_id, None)  # unpaused, it plans from then (as Airflow re-plans)
                continue
            planned = self.planned.get(dag_id)
            if dag_id in self.planned and (planned is None or planned.run_after > now):
                if planned is not None:
                    earliest = planned.run_after if earliest is None else min(earliest, planned.run_after)
                continue
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    created, nxt = await create_due_runs(conn, spec, now, planned)
            except ValueError as exc:
                log.error("dag_schedule_failed", dag_id=dag_id, error=str(exc))
                self.planned[dag_id] = None
                continue
            if created:
                log.info("scheduled_runs_created", dag_id=dag_id, count=len(created))
                self.pending.update(created)
            if nxt is not None and nxt.run_after <= now:  # held back by max_active_runs
                self.planned.pop(dag_id, None)
                continue
            self.planned[dag_id] = nxt
            if nxt is not None:
                earliest = nxt.run_after if earliest is None else min(earliest, nxt.run_after)
        return earliest

    # --- scheduling -------------------------------------------------------
    async def schedule(self, run_pks: list[int]) -> None:
        """One transaction: start runs, decide every touched run, queue, finish runs.

        The instance counts it read stand for the next pass only if it committed.
        """
        try:
            await self._schedule(run_pks)
        except BaseException:
            self.counts.abort()
            raise
        self.counts.committed()

    async def _schedule(self, run_pks: list[int]) -> None:
        now = utcnow()
        to_send: list[tuple[str, RunTask]] = []
        async with self.pool.acquire() as conn, rederivable_transaction(conn):
            runs = await conn.fetch(q("lock_active_runs"), run_pks)
            if len(runs) < len(run_pks):
                await self._retry_locked_elsewhere(conn, run_pks, runs)
            if not runs:
                return
            await self._start_queued_runs(conn, runs)
            busy = await self._read_busy(conn)
            windows = self._windows(runs, busy)
            read = await self._read_runs(conn, runs, windows)
            by_run, counts, truncated = read.tis, read.counts, read.truncated
            candidates: list[Candidate] = []
            starts: list[tuple] = []
            failures: list[tuple[int, str]] = []
            ends_ids, ends_states = [], []
            free: dict[str, int] = {}  # worker slots each DAG has left in this pass
            for run in runs:
                spec = self.specs.get(run["dag_id"])
                run_counts = counts[run["id"]]
                if spec is None or not run_counts:
                    continue
                deadline = _timeout_at(spec, run, now)
                if deadline is not None and deadline <= now:
                    await self._time_out(conn, spec, run)
                    continue
                self.run_sizes[run["id"]] = sum(n for c in run_counts.values() for n in c.values())
                self.queued[run["id"]] = sum(c.get("queued", 0) for c in run_counts.values())
                cap = free.setdefault(
                    spec.dag_id, max(0, spec.max_active_tasks - busy.dag_tasks[spec.dag_id]))
                decision, tis, windowed = await self._decide_expanding(
                    conn, spec, run["id"], by_run[run["id"]], run_counts, now, cap,
                    truncated[run["id"]], await blocked(conn, spec, run, run_counts))
                self.pending.update(await self.past.after_pass(
                    conn, spec, run, run_counts, decision.end, tis, decision.run_state is not None))
                free[spec.dag_id] = max(0, cap - len(decision.queue))
                if decision.held:
                    self.starved.add(run["id"])
                if windowed and (decision.end or decision.queue):
                    self.pending.add(run["id"])  # the next window, in the next pass
                elif any(ti.state == "up_for_retry" and (run["id"], ti.task_id) in windows
                         for ti in tis):  # a narrow window read retries not due: a whole one next
                    self.pending.add(run["id"])
                for ti_id, state in decision.end.items():
                    ends_ids.append(ti_id)
                    ends_states.append(state)
                ti_by_id = {ti.id: ti for ti in tis}
                self.ending[run["id"]] = {ti_by_id[i].task_id for i in decision.end if i in ti_by_id}
                # a paused DAG's running runs still end what cannot run, as in Airflow,
                # but start nothing new until it is unpaused
                for ti_id in () if spec.dag_id in self.paused else decision.queue:
                    t = spec.task(ti_by_id[ti_id].task_id)
                    if self._start_in_triggerer(spec, run, ti_by_id[ti_id], starts, failures):
                        continue
                    candidates.append(Candidate(ti_id, spec.dag_id, t.task_id, t.pool, t.pool_slots,
                                                t.priority_weight, ti_by_id[ti_id].map_index,
                                                spec.max_active_tasks, t.max_active_tis_per_dag,
                                                run["id"], t.max_active_tis_per_dagrun))
                wake_at = min((t for t in (decision.wake_at, deadline) if t is not None), default=None)
                if wake_at is not None and decision.run_state is None:
                    self.timers[run["id"]] = wake_at
                else:
                    self.timers.pop(run["id"], None)
                if decision.run_state is not None:
                    self._forget_run(run["id"])
                    note = "all_tasks_deadlocked" if decision.deadlocked else None
                    await conn.execute(q("finish_run"), run["id"], decision.run_state, note)
                    await self.callbacks.run_ended(conn, spec, run["id"], decision.run_state,
                                                   run_end_reason(decision.run_state, bool(note)))
                    log.info("run_finished", dag_id=run["dag_id"], run_id=run["run_id"],
                             state=decision.run_state, note=note)
            if ends_ids:
                await conn.execute(q("end_tis"), ends_ids, ends_states)
            if starts:
                await conn.execute(q("start_in_triggerer"), *map(list, zip(*starts, strict=True)))
                to_send.append((self.streams.triggers, TriggersPending()))
            for ti_id, error in failures:
                await conn.execute(q("fail_unstartable"), ti_id, cap_error(error))
                self.pending.update(r["id"] for r in runs)
            if candidates:
                chosen, held = await self._apply_limits(conn, busy, candidates)
                if held:
                    self.starved.update(r["id"] for r in runs)
                queued = await conn.fetch(q("queue_tis"), chosen) if chosen else []
                run_of = {c.ti_id: c.run_pk for c in candidates}
                for r in queued:
                    if run_of.get(r["id"]) in self.queued:
                        self.queued[run_of[r["id"]]] += 1
                to_send += [(self.streams.queue(r["queue"]), RunTask(ti_id=r["id"], try_number=r["try_number"]))
                            for r in queued]
        self.callbacks.flush()
        self.stats["runs_scheduled"] += len(runs)
        self.stats["tis_queued"] += len(to_send)
        await self.send(to_send)

    async def send(self, items: list) -> None:
        """A pass's queue messages and wake-ups, sent after its commit (``sluice dags test``
        runs passes with no Redis: it reads what was queued from the database)."""
        await bus.publish(self.redis, items)

    async def _time_out(self, conn: asyncpg.Connection, spec: DagSpec, run) -> None:
        await self.callbacks.run_ended(conn, spec, run["id"], "failed", "timed_out")
        await conn.execute(q("time_out_run"), run["id"])
        self.timers.pop(run["id"], None)
        self._forget_run(run["id"])
        log.warning("run_timed_out", dag_id=spec.dag_id, run_id=run["run_id"],
                    dagrun_timeout_s=spec.dagrun_timeout_s)

    def _forget_run(self, run_pk: int) -> None:
        """What passes kept about a run that ended."""
        for kept in (self.run_sizes, self.queued, self.last_pass, self.ending):
            kept.pop(run_pk, None)
        self.counts.forget(run_pk)

    async def _retry_locked_elsewhere(self, conn: asyncpg.Connection, run_pks: list[int],
                                      locked: list) -> None:
        """Come back soon to the active runs another scheduler's pass holds.

        That pass may have read the run before the change that woke us, so
        dropping the wake-up could leave the change unseen until the repair sweep.
        """
        held = {r["id"] for r in locked}
        others = [pk for pk in run_pks if pk not in held]
        retry_at = utcnow() + timedelta(seconds=LOCKED_RETRY_S)
        active = {row["id"] for row in await conn.fetch(q("active_runs_among"), others)}
        for pk in others:
            if pk in active:
                self.timers[pk] = retry_at
            else:  # ended (elsewhere): its counts are of no more use
                self.counts.forget(pk)
                self.ending.pop(pk, None)

    def _start_in_triggerer(self, spec: DagSpec, run, ti: TIRow, starts: list,
                            failures: list) -> bool:
        """A fresh try of a ``start_from_trigger`` instance goes straight to the triggerer."""
        if ti.state == "scheduled":
            return False
        args = start_args(spec.task(ti.task_id), ti.map_index)
        if args is None:
            return False
        ctx = run_context(spec.dag_id, run["run_id"], run["logical_date"], run["conf"] or {},
                          spec.params, ti.task_id, ti.map_index)
        try:
            kwargs = render(args.trigger_kwargs, ctx)
            next_kwargs = render(args.next_kwargs, ctx)
        except Exception as exc:  # noqa: BLE001 - a user's template fails that instance only
            failures.append((ti.id, f"cannot render trigger_kwargs of {ti.task_id!r} "
                                    f"map_index {ti.map_index}: {type(exc).__name__}: {exc}"))
            return True
        starts.append((ti.id, args.classpath, json.dumps(kwargs), args.next_method,
                       json.dumps(next_kwargs), args.timeout_s))
        log.info("task_started_in_triggerer", dag_id=spec.dag_id, run_id=run["run_id"],
                 task_id=ti.task_id, map_index=ti.map_index, trigger=args.classpath)
        return True

    async def _read_busy(self, conn: asyncpg.Connection) -> Busy:
        """The slots taken across all runs (after the locks, before the instances)."""
        busy = Busy()
        for row in await conn.fetch(q("read_busy")):
            busy.pool_slots[row["pool"]] += row["slots"]
            busy.dag_tasks[row["dag_id"]] += row["n"]
            busy.task_tis[(row["dag_id"], row["task_id"])] += row["n"]
            busy.run_task_tis[(row["run_pk"], row["task_id"])] += row["n"]
        return busy

    def _windows(self, runs: list, busy: Busy) -> dict[tuple[int, str], int]:
        """How many schedulable instances of each task a pass reads: what the free slots
        (the DAG's ``max_active_tasks``, the task's pool) can take, at least ``MIN_WINDOW``
        and at most ``WINDOW``. A pass over a 100,000-way task with 8 slots just freed
        then reads and decides about 32 instances, not 512.

        ``WINDOW`` whenever fewer would not do: for a run not read before; a task whose
        instances the run's last pass ended (an upstream failure ends them all without a
        slot, a window at a time); one with instances waiting for a retry (the window is
        read in map_index order, and those not yet due must not fill it); and one that
        starts in the triggerer (it takes no slot).
        """
        windows: dict[tuple[int, str], int] = {}
        for run in runs:
            spec = self.specs.get(run["dag_id"])
            kept = self.counts.kept(run["id"])
            if spec is None or kept is None:
                continue
            dag_free = spec.max_active_tasks - busy.dag_tasks[spec.dag_id]
            ending = self.ending.get(run["id"], ())
            for t in spec.tasks:
                if (t.task_id in ending or t.start_trigger is not None
                        or kept.get(t.task_id, {}).get("up_for_retry")):
                    continue
                slots = self.pools.get(t.pool)
                pool_free = (WINDOW if slots is None or slots < 0
                             else (slots - busy.pool_slots[t.pool]) // max(1, t.pool_slots))
                free = min(dag_free, pool_free)
                windows[(run["id"], t.task_id)] = min(WINDOW, max(MIN_WINDOW, free))
        return windows

    async def _read_runs(self, conn: asyncpg.Connection, runs: list,
                         windows: dict[tuple[int, str], int] | None = None) -> RunsRead:
        """Each run's state counts and a window of its schedulable instances per task.

        One statement after the locks are held, so counts and instances are one
        snapshot that includes the last pass of any other scheduler over these
        runs. Counts come from ``self.counts``, brought up to date by the
        instances that changed since the previous read (scheduler/counts.py): the
        statement's cost follows what changed, not the runs' sizes. Tasks of a
        mapped group are read whole (instance *i* is judged on its own index), and
        so are tasks the DAG no longer has; any other task a window at a time
        (``windows``, else ``WINDOW``).
        """
        pks = [r["id"] for r in runs]
        windows = windows or {}
        read = RunsRead({pk: [] for pk in pks}, {}, {})
        since = [self.counts.since(pk) for pk in pks]
        pair_runs, pair_tasks, limits = [], [], []
        for run in runs:
            spec = self.specs.get(run["dag_id"])
            known = self.counts.tasks(run["id"])
            for t in spec.tasks if spec is not None else ():
                pair_runs.append(run["id"])
                pair_tasks.append(t.task_id)
                limits.append(windows.get((run["id"], t.task_id), WINDOW)
                              if t.mapped_group is None else None)
                known.discard(t.task_id)
            for task_id in sorted(known):  # no longer in the DAG: read whole
                pair_runs.append(run["id"])
                pair_tasks.append(task_id)
                limits.append(None)
        rows = await conn.fetch(q("read_runs"), pks, [s for s, _ in since], [e for _, e in since],
                                pair_runs, pair_tasks, limits)
        heads, changes = {}, defaultdict(list)
        for row in rows:
            kind = row["kind"]
            if kind == "change":
                changes[row["run_pk"]].append((row["id"], row["task_id"], row["state"]))
            elif kind == "ti":
                read.tis[row["run_pk"]].append(_ti_row(row))
            else:
                heads[row["run_pk"]] = row
        windowed = {(pk, task): limit for pk, task, limit
                    in zip(pair_runs, pair_tasks, limits, strict=True) if limit is not None}
        for pk, head in heads.items():
            self.counts.read(pk, head["epoch"], head["whole"], head["xmin"], changes.get(pk, ()))
            by_task = read.counts[pk] = self.counts.counts(pk)
            read.truncated[pk] = frozenset(
                task_id for task_id, c in by_task.items()
                if (pk, task_id) in windowed
                and c[None] + c["scheduled"] + c["up_for_retry"] > windowed[(pk, task_id)])
        for pk in pks:
            read.counts.setdefault(pk, defaultdict(Counter))
            read.truncated.setdefault(pk, frozenset())
        return read

    async def _decide_expanding(self, conn: asyncpg.Connection, spec: DagSpec, run_pk: int,
                                tis: list[TIRow], counts: StateCounts, now: datetime,
                                queue_cap: int | None = None,
                                truncated: frozenset[str] = frozenset(),
                                past_blocked: frozenset[str] = frozenset(),
                                ) -> tuple[RunDecision, list[TIRow], bool]:
        """Decide; while placeholders expand, create their instances and decide again.

        Also says whether any task was read only in part (its window).
        """
        facts = None
        for _ in range(len(spec.tasks) + 1):
            if facts is None and any(ti.map_index < 0 and ti.task_id in spec.task_map
                                     and spec.task(ti.task_id).mapped for ti in tis):
                facts = await self._run_facts(conn, run_pk)
            states = await group_states(conn, spec, run_pk, tis)
            decision = decide(spec, tis, now, facts, {k: Counter(v) for k, v in counts.items()},
                              states, queue_cap, truncated, past_blocked)
            if not decision.expand:
                return decision, tis, bool(truncated)
            if decision.end:
                await conn.execute(q("end_tis"), list(decision.end), list(decision.end.values()))
            await conn.execute(q("expand_placeholders"), list(decision.expand),
                               list(decision.expand.values()))
            for ti_id, length in decision.expand.items():
                log.info("task_expanded", dag_id=spec.dag_id, ti_id=ti_id, length=length)
            run = [{"id": run_pk, "dag_id": spec.dag_id}]
            read = await self._read_runs(conn, run)
            tis, counts, truncated = read.tis[run_pk], read.counts[run_pk], read.truncated[run_pk]
        raise RuntimeError(f"expansion of a run of {spec.dag_id!r} did not settle")

    async def _run_facts(self, conn: asyncpg.Connection, run_pk: int) -> RunFacts:
        facts = RunFacts()
        facts.task_map = {r["task_id"]: r["length"] for r in await conn.fetch(q("run_task_maps"), run_pk)}
        facts.returned = {r["task_id"]: r["n"] for r in await conn.fetch(q("run_returned_counts"), run_pk)}
        facts.failed_unexpanded = {r["task_id"] for r in await conn.fetch(q("run_failed_unexpanded"),
                                                                         run_pk)}
        return facts

    async def _start_queued_runs(self, conn: asyncpg.Connection, runs: list) -> None:
        queued = [r for r in runs if r["state"] == "queued"]
        if not queued:
            return
        counts = {r["dag_id"]: r["n"] for r in await conn.fetch(
            q("running_runs_per_dag"), list({r["dag_id"] for r in queued}))}
        for run in queued:
            spec = self.specs.get(run["dag_id"])
            if spec is None:
                await conn.execute(q("finish_run"), run["id"], "failed", "dag_not_found")
                continue
            if spec.dag_id in self.paused:  # Airflow: queued until the DAG is unpaused
                continue
            if counts.get(spec.dag_id, 0) >= spec.max_active_runs:
                continue
            counts[spec.dag_id] = counts.get(spec.dag_id, 0) + 1
            await conn.execute(q("start_run"), run["id"])
            if run["clear_number"] == 0:  # a cleared run has its instances (shared/clear.py)
                await insert_task_instances(conn, run["id"], task_instance_rows(spec))
            log.info("run_started", dag_id=run["dag_id"], run_id=run["run_id"])

    async def _apply_limits(self, conn: asyncpg.Connection, busy: Busy,
                            candidates: list[Candidate]) -> tuple[list[int], bool]:
        # read in the pass: a pool created, resized or deleted counts from the next pass
        self.pools = {row["name"]: row["slots"] for row in await conn.fetch(q("pools"))}
        for (dag_id, task_id, pool), why in pool_problems(candidates, self.pools).items():
            if (dag_id, task_id, pool, why) not in self.pool_warned:  # once, not every pass
                self.pool_warned.add((dag_id, task_id, pool, why))
                log.warning("task_waits_for_pool", dag_id=dag_id, task_id=task_id, pool=pool,
                            error=why)
        return select(candidates, busy, self.pools)

    # --- the loops ---------------------------------------------------------
    async def main_loop(self) -> None:
        while not self.life.stopping.is_set():
            try:
                await self._iteration()
            except TRANSIENT as exc:
                self._database_lost()
                log.warning("scheduler_connection_error", error=str(exc))
                with anyio.move_on_after(1.0):
                    await self.life.stopping.wait()

    async def _iteration(self) -> None:
        if self.dags_dirty:
            await self.refresh_dags()
        now = utcnow()
        next_run_due = await self.create_scheduled_runs(now)
        self.pending.update(await create_asset_runs(self.pool))  # assets: events that came
        self.pending.update(pk for pk, due in self.timers.items() if due <= now)
        await self._drain_pending()
        wake = min([t for t in [next_run_due, *self.timers.values()] if t is not None],
                   default=None)
        block_s = self.settings.repair_interval_s
        if wake is not None:
            block_s = min(block_s, max(0.001, (wake - utcnow()).total_seconds()))
        entries = await self._read(int(block_s * 1000))
        await self.consumer.handle(entries, self._on_events, transient=TRANSIENT)
        await self._drain_pending()

    async def _on_events(self, entries: list) -> None:
        """Schedule the runs these events name; raises if a pass over one of them raises."""
        pks: set[int] = set()
        for _, entry in entries:
            match entry.message:
                case RunChanged(run_pk=pk):
                    pks.add(pk)
                case DagsChanged():
                    self.dags_dirty = True
                case other:
                    raise ValueError(f"a {other.kind!r} message does not belong on the events stream")
        if pks and self.starved:  # something finished: what limits held back may fit now
            self.pending |= self.starved
            self.starved = set()
        if self.dags_dirty:
            await self.refresh_dags()
        ordered = sorted(pks)
        for start in range(0, len(ordered), self.settings.batch_size):
            await self._pass(self._due_now(ordered[start:start + self.settings.batch_size]))

    async def _drain_pending(self) -> None:
        """Schedule what timers and earlier passes left; a run whose pass raises is logged."""
        while self.pending:
            batch = self._due_now(sorted(self.pending)[: self.settings.batch_size])
            if not batch:
                return
            for pk, exc in await bus.isolate(batch, self._pass, transient=TRANSIENT):
                log.error("run_pass_failed", run_pk=pk, error=bus.reason(exc), exc_info=exc)

    async def _pass(self, run_pks: list[int]) -> None:
        """One scheduling pass; a pass that raised counts as none (the run is not held back).

        After a lost connection the runs are pending again. After any other error
        their timers go too, so a run whose pass keeps raising comes back with the
        next event about it (the repair sweep sends one) instead of spinning.
        """
        if not run_pks:
            return
        try:
            with SCHEDULING_PASS_SECONDS.time():
                await self.schedule(run_pks)
        except TRANSIENT:
            self.pending.update(run_pks)
            self._database_lost()
            raise
        except Exception:
            for pk in run_pks:
                self.last_pass.pop(pk, None)
                self.timers.pop(pk, None)
            raise

    def _database_lost(self) -> None:
        """A connection to PostgreSQL failed: the server may have restarted and lost its last
        asynchronous commits, so the counts kept from what it said are read again whole."""
        self.counts.clear()

    def _due_now(self, candidates: list[int]) -> list[int]:
        """Runs to schedule now; very large runs are re-decided at most every few ms.

        A pass costs about the same however many instances ended since the last one,
        so passes over a large run are spaced by ``PASS_GAP_PER_TI_S`` per instance
        (5 ms at 10,000, at most 50 ms) to take more ends each; small runs (chains) are
        never held back. The gap is short: with the DAG's slots capped
        (``max_active_tasks``), each pass queues only what finished since the last
        one, so the pass rate is the mapped task's throughput. While a run has
        ``QUEUED_TO_HOLD`` instances queued, the workers have work to claim and the
        gap is ``HELD_GAP_S``: a wide fan-out is re-decided 20 times a second, not
        once per instance that ends.
        """
        now = time.monotonic()
        due = []
        for pk in candidates:
            self.pending.discard(pk)
            gap = HELD_GAP_S if self.queued.get(pk, 0) >= QUEUED_TO_HOLD else \
                min(0.05, self.run_sizes.get(pk, 0) * PASS_GAP_PER_TI_S)
            wait = self.last_pass.get(pk, 0.0) + gap - now
            if wait > 0:
                self.timers[pk] = utcnow() + timedelta(seconds=wait)
                continue
            self.last_pass[pk] = now
            due.append(pk)
        return due

    async def _read(self, block_ms: int) -> list:
        with anyio.CancelScope() as scope:
            self._read_scope = scope
            try:
                if not self.life.stopping.is_set():
                    return await self.consumer.read(block_ms)
            finally:
                self._read_scope = None
        return []

    async def stop_reading_on_shutdown(self) -> None:
        await self.life.stopping.wait()
        if self._read_scope is not None:
            self._read_scope.cancel()

    async def parse_loop(self, parser: FolderParser) -> None:
        while not self.life.stopping.is_set():
            try:
                if await parser.parse_changed():
                    await bus.publish(self.redis, [(self.streams.events, DagsChanged())])
            except* TRANSIENT as lost:  # also from inside a task group
                log.warning("parse_loop_connection_error", error=str(lost.exceptions[0]))
            with anyio.move_on_after(self.settings.dag_dir_list_interval_s):
                await self.life.stopping.wait()

    async def repair_loop(self) -> None:
        """The slow sweep: zombies, owed queue messages, lost wake-ups, unclaimed triggers."""
        while not self.life.stopping.is_set():
            with anyio.move_on_after(self.settings.repair_interval_s):
                await self.life.stopping.wait()
            if self.life.stopping.is_set():
                return
            try:
                await self.repair()
                self.db_continuity.held()
            except DB_ERRORS + bus.REDIS_ERRORS as exc:
                self.db_continuity.broke()
                if isinstance(exc, DB_ERRORS):
                    self._database_lost()
                log.warning("repair_connection_error", error=str(exc))

    async def repair(self) -> None:
        s = self.settings
        messages: list[tuple[str, object]] = []
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                touched = set()
                if self.db_continuity.longer_than(s.worker_heartbeat_timeout_s):
                    touched = await self._fail_zombies(conn)
                touched |= await self._expire_deferrals(conn)
            self.callbacks.flush()
            owed = await conn.fetch(q("owed_queued"), s.queued_resend_after_s)
            if owed:
                await conn.execute(q("touch_queued"), [r["id"] for r in owed])
                messages += [(self.streams.queue(r["queue"]),
                              RunTask(ti_id=r["id"], try_number=r["try_number"])) for r in owed]
                log.info("queued_resent", count=len(owed))
            active = [r["id"] for r in await conn.fetch(q("active_run_pks"))]
            await self._notice_missed_changes(conn)
            if await conn.fetchval(q("unclaimed_triggers_exist")):
                messages.append((self.streams.triggers, TriggersPending()))
            await conn.execute(q("delete_orphan_triggers"))
        await self.consumer.ensure_groups()
        messages += [(self.streams.events, RunChanged(run_pk=pk)) for pk in set(active) | touched]
        await bus.publish(self.redis, messages)

    async def _notice_missed_changes(self, conn: asyncpg.Connection) -> None:
        """A pause, an unpause or a pool change another scheduler consumed the wake-up of
        (or that was lost with Redis) is read here, at the latest one sweep later."""
        paused = {r["dag_id"] for r in await conn.fetch(q("paused_dag_ids"))}
        pools = {r["name"]: r["slots"] for r in await conn.fetch(q("pools"))}
        if paused & self.specs.keys() != self.paused or pools != self.pools:
            self.dags_dirty = True

    async def _expire_deferrals(self, conn: asyncpg.Connection) -> set[int]:
        """Backstop for trigger timeouts when no triggerer enforced them (none alive)."""
        touched: set[int] = set()
        for row in await conn.fetch(q("expired_deferrals"), self.settings.trigger_timeout_grace_s):
            pk = await conn.fetchval(q("fail_expired_deferral"), row["id"], row["trigger_id"])
            if pk is not None:
                log.warning("trigger_timeout_enforced_by_scheduler", ti_id=row["id"])
                touched.add(pk)
        return touched

    async def _fail_zombies(self, conn: asyncpg.Connection) -> set[int]:
        touched: set[int] = set()
        for z in await conn.fetch(q("zombies"), self.settings.worker_heartbeat_timeout_s):
            spec = self.specs.get(z["dag_id"])
            delay = 0.0
            if spec is not None and z["task_id"] in spec.task_map:
                policy = spec.task(z["task_id"]).retry_policy()
                delay = policy.delay_after(z["dag_id"], z["task_id"], z["logical_date"],
                                           z["try_number"]) or 0.0
            msg = "task instance heartbeat expired: its worker died or lost contact"
            pk = await conn.fetchval(q("fail_zombie"), z["id"], z["try_number"], msg, delay)
            if pk is not None:
                await self.callbacks.try_failed(conn, z["id"], z["try_number"], msg)
                log.warning("zombie_task_failed", dag_id=z["dag_id"], task_id=z["task_id"],
                            ti_id=z["id"], try_number=z["try_number"])
                touched.add(pk)
        return touched

    def status(self) -> str:
        return (f"{len(self.specs)} dags, {self.stats['runs_scheduled']} run passes, "
                f"{self.stats['tis_queued']} queued")


def _timeout_at(spec: DagSpec, run, now: datetime) -> datetime | None:
    """When ``dagrun_timeout`` fails this run (a run started by this pass counts from now)."""
    if spec.dagrun_timeout_s is None:
        return None
    return (run["start_date"] or now) + timedelta(seconds=spec.dagrun_timeout_s)


def _ti_row(row) -> TIRow:
    return TIRow(row["id"], row["task_id"], row["map_index"], row["state"], row["try_number"],
                 row["next_retry_at"])


async def run(settings: Settings, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
    """Run the scheduler until SIGTERM (finishing its current batch)."""
    require_dags_folder(settings.dags_folder)
    db_url, redis_url = settings.require_urls()
    life = Lifecycle("scheduler")
    pool = await create_pool(db_url, max_size=5)
    redis = bus.connect(redis_url)
    parser: FolderParser | None = None
    try:
        await bus.wait_for_redis(redis)
        sched = Scheduler(settings, pool, redis, life)
        await sched.consumer.ensure_groups()
        # parsing runs beside scheduling: the DAGs stored already are scheduled meanwhile
        parser = FolderParser(pool, settings.dags_folder, settings.parse_timeout_s,
                              home=settings.home,
                              paused_at_creation=settings.dags_are_paused_at_creation,
                              on_change=lambda: bus.publish(redis, [(sched.streams.events,
                                                                     DagsChanged())]))
        # Airflow's timetables decide scheduled runs: imported once, with Sluice's Airflow
        # home, and Sluice's log format put back over the one importing Airflow sets
        use_airflow_home(settings.home)
        await anyio.to_thread.run_sync(load_timetables)
        configure_logging()
        await sched.refresh_dags()
        async with pool.acquire() as conn:
            sched.pending.update(r["id"] for r in await conn.fetch(q("active_run_pks")))
        async with anyio.create_task_group() as tg:
            tg.start_soon(life.watch_signals, tg.cancel_scope)
            tg.start_soon(sched.stop_reading_on_shutdown)
            tg.start_soon(sched.parse_loop, parser)
            tg.start_soon(sched.repair_loop)
            tg.start_soon(CallbackRunner(settings, pool, parser.server, sched.callbacks).run)
            tg.start_soon(serve_scheduler, sched)  # /metrics and /health
            tg.start_soon(life.watchdog, sched.status)
            log.info("scheduler_ready", dags_folder=str(settings.dags_folder))
            sd_notify("READY=1", "STATUS=scheduling")
            task_status.started()
            await sched.main_loop()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if parser is not None:  # its parse server: stopped, not left to notice our exit
                await parser.aclose()
            await redis.aclose()
            await pool.close()
        log.info("scheduler_stopped")
