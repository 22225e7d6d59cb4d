"""The triggerer daemon: run deferred tasks' triggers by the thousand in one event loop.

Claims unassigned triggers (and those of triggerers whose heartbeat expired)
up to its capacity with ``FOR UPDATE SKIP LOCKED``, by priority then age; is
woken by the triggers stream; hands the first event of each trigger back to
its task instance (``deferred -> scheduled``) and wakes the scheduler. A
trigger that fails, ends without an event or times out resumes the task with
``next_method="__fail__"``. On SIGTERM it hands its triggers back at once.

The triggers are Airflow's own classes (Airflow core, providers, DAG files),
decoded, run and resumed by ``triggerer.airflow_triggers``, imported once
Airflow's home is set; their calls to the server (connections, variables,
states) are answered from PostgreSQL through a pool they never hold a
connection of.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import os
import socket
import sys

import anyio
import asyncpg
import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars

from shared import bus
from shared.airflow_spec.loading import use_airflow_home
from shared.config import Settings
from shared.daemon import Lifecycle, sd_notify
from shared.dags_folder import add_dags_folder_to_path
from shared.db import DB_ERRORS, Continuity, create_pool, persist, q
from shared.logging import configure_logging
from shared.messages import RunChanged, TriggersPending
from shared.metrics import observe_fire_lag, serve_triggerer
from triggerer.asset_watchers import AssetWatchers
from triggerer.gc_control import GcControl

log = structlog.get_logger()
TRANSIENT = DB_ERRORS + bus.REDIS_ERRORS  # a lost connection: retried, never blamed on a message
BLOCKING_WARN_S = 0.2
GC_TICK_S = 1.0  # how often started triggers may be frozen (see triggerer.gc_control)
START_CHUNK = 200  # claimed triggers started between two yields to the event loop
CLAIM_PAGE = 1000  # triggers claimed per transaction: the rows held at once, the loop never stalled
JUDGE_CHUNK = 5000  # owned triggers compared between two yields to the event loop
WRITERS = 2  # batch writers: an event waits for at most one write in progress, not a queue of them
#: strings every trigger of a mapped task repeats, shared instead of one copy per row
_SHARED_STRINGS = ("classpath", "dag_id", "run_id", "task_id")
FLUSH_TIMEOUT_S = 10.0  # on shutdown, how long first events in hand may take to be written


async def _wake_ups(entries: list) -> None:
    """The triggers stream carries wake-ups only; claiming follows in the loop."""
    for _, entry in entries:
        if not isinstance(entry.message, TriggersPending):
            raise ValueError(f"a {entry.message.kind!r} message does not belong on the triggers stream")


def owned_ids_query() -> str:
    """``owned_triggers`` as one array of ids: at 100,000 triggers a row object each,
    alive across the judging, was 100,000 objects for the collector every heartbeat."""
    return f"SELECT coalesce(array_agg(id), '{{}}') FROM ({q('owned_triggers')}) AS owned"


def _ti_ids(row: dict) -> dict:
    """The task instance a trigger row belongs to, for log lines."""
    return {k: row[k] for k in ("dag_id", "run_id", "task_id", "map_index", "try_number")}


class Triggerer:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis, life: Lifecycle,
                 airflow=None):
        self.settings = settings
        #: ``triggerer.airflow_triggers`` (given by :func:`run`, which sets Airflow's home first)
        self.airflow = airflow or importlib.import_module("triggerer.airflow_triggers")
        self.pool = pool
        self.redis = redis
        self.life = life
        self.streams = bus.Streams(settings.stream_prefix)
        self.consumer = bus.Consumer(redis, [self.streams.triggers], bus.TRIGGERER_GROUP,
                                     bus.consumer_name("triggerer"),
                                     deadletter=self.streams.deadletter,
                                     claim_interval_s=settings.claim_interval_s)
        self.id: int | None = None
        #: trigger id -> the scope that stops it; each runs in a plain asyncio task (see _spawn)
        self.running: dict[int, anyio.CancelScope] = {}
        self._tasks: set[asyncio.Task] = set()
        self._crashed: BaseException | None = None
        self._crash = anyio.Event()
        self._registering = anyio.Lock()
        self.fired = 0
        self.db_continuity = Continuity()  # others' heartbeats are judged only on an unbroken view
        # first events wait here for the writer, which commits them in batches
        self._fired_in, self._fired_out = anyio.create_memory_object_stream[tuple[dict, str]](
            max_buffer_size=math.inf)
        self._unwritten = 0
        self._all_written = anyio.Event()
        #: the cyclic collector: started triggers frozen, full passes timed (gc_control)
        self.gc = GcControl()

    async def register(self) -> None:
        async with self.pool.acquire() as conn:
            self.id = await conn.fetchval(q("register_triggerer"), socket.gethostname(),
                                          os.getpid(), self.settings.triggerer_capacity)

    async def reregister(self, lost_id: int) -> None:
        """Register anew once this triggerer's row ``lost_id`` is gone (another triggerer
        judged it dead and released its triggers): once, whichever loop finds it first."""
        async with self._registering:
            if self.id == lost_id:
                log.warning("triggerer_row_lost_reregistering", lost_id=lost_id)
                await self.register()

    async def claim_loop(self, tg) -> None:
        while not self.life.stopping.is_set():
            try:
                await self.claim(tg)
                entries = []  # stays so when shutdown cancels the read
                with anyio.CancelScope() as scope:
                    self._read_scope = scope
                    entries = await self.consumer.read(int(self.settings.triggerer_heartbeat_s * 1000))
                await self.consumer.handle(entries, _wake_ups, transient=TRANSIENT)
            except TRANSIENT as exc:
                log.warning("triggerer_connection_error", error=str(exc))
                with anyio.move_on_after(1.0):
                    await self.life.stopping.wait()

    async def claim(self, tg=None) -> None:
        """Claim up to capacity, :data:`CLAIM_PAGE` per transaction, starting each page's
        triggers before the next is claimed."""
        claimed = 0
        while not self.life.stopping.is_set():
            free = self.settings.triggerer_capacity - len(self.running)
            if free <= 0:
                break
            page, claimant = min(free, CLAIM_PAGE), self.id
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    ids = [r["id"] for r in await conn.fetch(q("claim_triggers"), claimant, page)]
                    rows = await conn.fetch(q("load_triggers"), ids) if ids else []
            except asyncpg.ForeignKeyViolationError:  # our row went since we last looked
                await self.reregister(claimant)
                continue
            await self.start_claimed(rows)
            claimed += len(rows)
            if len(ids) < page:
                break
        if claimed:
            log.info("triggers_claimed", count=claimed, running=len(self.running))

    async def start_claimed(self, rows) -> None:
        """Start a task per claimed row, yielding to the event loop every :data:`START_CHUNK`
        so triggers already running (and their first steps) are never held up for long."""
        for n, record in enumerate(rows, start=1):
            if record["id"] not in self.running:
                row = dict(record)
                for key in _SHARED_STRINGS:
                    if isinstance(row.get(key), str):
                        row[key] = sys.intern(row[key])
                scope = anyio.CancelScope()
                self.running[row["id"]] = scope
                self._spawn(self.run_trigger(row, scope))
                self.gc.started()
            if n % START_CHUNK == 0:
                await anyio.sleep(0)

    def _spawn(self, coro) -> None:
        """Run ``coro`` in a plain asyncio task: a task group's per-task handle, scope and
        event cost more than the sleeping trigger itself at 100,000 triggers. Its scope in
        :attr:`running` stops it; an exception escaping it ends the daemon (:meth:`crash_loop`)
        as it would a task group."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._trigger_done)

    def _trigger_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None \
                and self._crashed is None:
            self._crashed = exc
            self._crash.set()

    async def crash_loop(self) -> None:
        """Raise, inside the daemon's task group, what escaped a trigger's task."""
        await self._crash.wait()
        raise self._crashed

    async def stop_triggers(self, timeout_s: float) -> None:
        """Stop every running trigger and wait (up to ``timeout_s``) for their tasks to end."""
        for scope in list(self.running.values()):
            scope.cancel()
        with anyio.move_on_after(timeout_s):
            while self._tasks:
                await asyncio.wait(set(self._tasks))

    async def run_trigger(self, row: dict, scope: anyio.CancelScope) -> None:
        """Run one trigger in its own task (:meth:`_spawn`): its log ids are bound in the
        task's own context, never reset, since nothing else runs in it."""
        bind_contextvars(**_ti_ids(row), trigger_id=row["id"])
        try:
            with scope:
                await self._run(row)
        finally:
            self.running.pop(row["id"], None)
            self.gc.ended()

    async def _run(self, row: dict) -> None:
        """An Airflow trigger to its outcome, written as Airflow 3.3's triggerer writes it."""
        af = self.airflow
        try:
            trigger = af.load_trigger(row)
            del row["kwargs"]  # the trigger holds its own values now
        except af.TriggerLoadError as exc:
            log.error("trigger_load_failed", error=str(exc))
            outcome = af.Failed(af.TRIGGER_FAILURE, exc)
        else:
            outcome = await af.first_event(trigger, row["trigger_timeout"])
            if isinstance(outcome, af.Failed) and outcome.error is not None:
                log.error("trigger_failed",
                          error=f"{type(outcome.error).__name__}: {outcome.error}")
        await self._settle(row, outcome)

    async def _settle(self, row: dict, outcome) -> None:
        """A failure resumes with ``__fail__``; a task-end event ends the try here; any other
        first event goes to the batch writer, its payload in ``next_kwargs["event"]``."""
        af = self.airflow
        if isinstance(outcome, af.Failed):
            await self._resume_failed(row, af.failure_next_kwargs(outcome.reason, outcome.error),
                                      outcome.reason)
        elif af.is_task_end(outcome.event):
            await self._end_with_event(row, outcome.event)
        else:
            try:
                next_kwargs = af.next_kwargs_with_event(row["next_kwargs"], outcome.event.payload)
            except af.Unresumable as exc:
                log.error("trigger_event_unresumable", error=str(exc))
                await self._resume_failed(row, af.failure_next_kwargs(str(exc), exc.__cause__),
                                          str(exc))
                return
            self._hand_to_writer(row, next_kwargs)

    async def _end_with_event(self, row: dict, event) -> None:
        """A TaskSuccess/Failed/SkippedEvent ends the try here; a failure with tries left retries
        after the task's own delay (``retry_delay``, backoff), as a failed try would."""
        from worker.execution_api.task_instances import retry_delay

        retries_left = row["max_tries"] != 0 and row["try_number"] <= row["max_tries"]
        end = self.airflow.task_end(event, retries_left=retries_left)
        delay = None
        if end.state == "up_for_retry":
            delay = await persist(lambda: retry_delay(self, row["ti_uuid"]), what="retry_delay")
        await self._end_task(row, end.state, end.xcoms, delay)

    def _hand_to_writer(self, row: dict, next_kwargs_json: str) -> None:
        """Queue a first event (the resumed instance's ``next_kwargs``) for the batch writer.

        The writer group-commits events (one transaction, one pipelined wake-up per
        run for a whole batch); until it is written the trigger row stays this
        triggerer's, so a crash re-runs the trigger elsewhere. An event that ends the
        task is written on its own (:meth:`_end_task`).
        """
        self._unwritten += 1
        row["handed_at"] = anyio.current_time()  # for sluice_trigger_fire_lag_seconds
        if self._all_written.is_set():
            self._all_written = anyio.Event()
        self._fired_in.send_nowait((row, next_kwargs_json))

    async def _end_task(self, row: dict, state: str, xcoms: dict[str, str],
                        retry_delay_s: float | None = None) -> None:
        """End the instance from its trigger's event, with its XComs (JSON texts), on its own."""
        async def write():
            async with self.pool.acquire() as conn, conn.transaction():
                run_pk = await self._end(conn, row, state, xcoms, retry_delay_s)
                await conn.execute(q("delete_trigger"), row["id"])
                return run_pk

        run_pk = await persist(write, what="trigger_event")
        self.fired += 1
        log.info("trigger_fired", resumed=run_pk is not None, state=state)
        await self._wake({run_pk} - {None})

    async def write_fired(self) -> None:
        """Commit first events in batches of up to ``batch_size``, as they come."""
        async for first in self._fired_out:
            batch = [first]
            while len(batch) < self.settings.batch_size:
                try:
                    batch.append(self._fired_out.receive_nowait())
                except anyio.WouldBlock:
                    break
            await self._write_batch(batch)
            self._unwritten -= len(batch)
            if self._unwritten == 0:
                self._all_written.set()

    async def _write_batch(self, batch: list[tuple[dict, str]]) -> None:
        rows = [row for row, _ in batch]

        async def write():
            async with self.pool.acquire() as conn, conn.transaction():
                resumed = await conn.fetch(q("resume_fired_tis"), [r["ti_id"] for r in rows],
                                           [r["id"] for r in rows], [kw for _, kw in batch])
                await conn.execute(q("delete_triggers"), [r["id"] for r in rows])
                return {r["id"]: r["run_pk"] for r in resumed}

        resumed = await persist(write, what="trigger_events")
        observe_fire_lag(r["handed_at"] for r in rows)
        self.fired += len(batch)
        for row in rows:
            with bound_contextvars(**_ti_ids(row), trigger_id=row["id"]):
                log.info("trigger_fired", resumed=row["ti_id"] in resumed)
        await self._wake(set(resumed.values()))

    async def flush_fired(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) until every first event in hand is written."""
        with anyio.move_on_after(timeout_s):
            while self._unwritten:
                await self._all_written.wait()

    async def _end(self, conn, row: dict, state: str, xcoms: dict[str, str],
                   retry_delay_s: float | None) -> int | None:
        if state == "up_for_retry":
            done = await conn.fetchrow(q("retry_deferred_ti"), row["ti_id"], row["id"],
                                       float(retry_delay_s or 0.0))
        else:
            done = await conn.fetchrow(q("end_deferred_ti"), row["ti_id"], row["id"], state)
        if done is not None and state in ("failed", "up_for_retry"):
            # no task process ran this end: the scheduler runs the task's failure or retry
            # callback and email, as Airflow's triggerer asks its DAG processor to
            await conn.execute(q("request_task_callback"), row["ti_id"], row["try_number"],
                               "the task's trigger ended it with a TaskFailedEvent")
        if done is not None and xcoms:
            keys = list(xcoms)
            await conn.execute(q("put_xcoms"), done["run_pk"], done["task_id"],
                               done["map_index"], keys, [xcoms[k] for k in keys])
        return done["run_pk"] if done else None

    async def _resume(self, conn, row: dict, next_kwargs: dict, next_method: str | None = None):
        return await conn.fetchval(q("resume_ti"), row["ti_id"], row["id"], next_kwargs,
                                   next_method)

    async def fail(self, row: dict, reason: str, exc: BaseException | None) -> None:
        """Resume the instance with ``__fail__`` (``reason``, ``exc``'s traceback) so the
        worker raises and retry rules apply."""
        await self._resume_failed(row, self.airflow.failure_next_kwargs(reason, exc), reason)

    async def _resume_failed(self, row: dict, next_kwargs: dict, error: str) -> None:
        """Resume with ``next_method="__fail__"`` and ``next_kwargs`` (the error, its traceback)."""
        async def write():
            async with self.pool.acquire() as conn, conn.transaction():
                run_pk = await self._resume(conn, row, next_kwargs, "__fail__")
                await conn.execute(q("delete_trigger"), row["id"])
                return run_pk

        run_pk = await persist(write, what="trigger_failure")
        log.warning("trigger_resumed_with_failure", error=error)
        await self._wake({run_pk} - {None})

    async def _wake(self, run_pks: set[int]) -> None:
        """Wake the scheduler for each run; a lost wake-up is re-sent by its repair sweep."""
        if not run_pks:
            return
        try:
            await bus.publish(self.redis, [(self.streams.events, RunChanged(run_pk=pk))
                                           for pk in sorted(run_pks)])
        except bus.REDIS_ERRORS as exc:
            log.warning("wake_up_not_sent", run_pks=sorted(run_pks), error=str(exc))

    async def heartbeat_loop(self) -> None:
        """Heartbeat, release expired triggerers, and drop triggers whose task moved on."""
        while not self.life.stopping.is_set():
            with anyio.move_on_after(self.settings.triggerer_heartbeat_s):
                await self.life.stopping.wait()
            if self.life.stopping.is_set():
                return
            try:
                async with self.pool.acquire() as conn:
                    if await conn.fetchval(q("heartbeat_triggerer"), self.id) is None:
                        await self.reregister(self.id)
                    dead = []
                    if self.db_continuity.longer_than(self.settings.triggerer_heartbeat_timeout_s):
                        dead = await conn.fetch(q("release_dead_triggerers"),
                                                self.settings.triggerer_heartbeat_timeout_s)
                    # only triggers claimed before the read can be judged by it: one claimed
                    # meanwhile is ours but not in ``owned``, and cancelling it would strand it
                    judged = dict(self.running)
                    owned = await conn.fetchval(owned_ids_query(), self.id)
                await self._cancel_lost(judged, owned)
                if dead:
                    log.warning("dead_triggerers_released", count=len(dead))
                    await bus.publish(self.redis, [(self.streams.triggers, TriggersPending())])
                self.db_continuity.held()
            except DB_ERRORS + bus.REDIS_ERRORS as exc:
                self.db_continuity.broke()
                log.warning("triggerer_heartbeat_failed", error=str(exc))

    async def _cancel_lost(self, judged: dict[int, anyio.CancelScope],
                           owned_ids: list[int]) -> None:
        """Cancel the judged triggers no longer ours; a chunk at a time, since at 100,000
        triggers one pass over them all would hold up the triggers due meanwhile."""
        owned: set[int] = set()
        for start in range(0, len(owned_ids), JUDGE_CHUNK):
            owned.update(owned_ids[start:start + JUDGE_CHUNK])
            await anyio.sleep(0)
        for n, (trigger_id, scope) in enumerate(judged.items(), start=1):
            if trigger_id not in owned:
                scope.cancel()
            if n % JUDGE_CHUNK == 0:
                await anyio.sleep(0)

    async def watchdog_loop(self) -> None:
        """Log when something blocks the event loop (a trigger doing sync I/O)."""
        while not self.life.stopping.is_set():
            before = anyio.current_time()
            await anyio.sleep(0.1)
            lag = anyio.current_time() - before - 0.1
            self.gc.timer.flush()
            if lag > BLOCKING_WARN_S:
                log.warning("event_loop_blocked", blocked_s=round(lag, 3),
                            hint="a trigger is running blocking code in async def run()")

    async def gc_loop(self) -> None:
        """Freeze the triggers started once they sleep, thaw what ended ones leak
        (:class:`~triggerer.gc_control.GcControl`); everything is unfrozen when it ends."""
        self.gc.start()
        try:
            while True:
                await anyio.sleep(GC_TICK_S)
                self.gc.tick(len(self.running))
        finally:
            self.gc.stop()

    async def shutdown(self, tg_scope: anyio.CancelScope) -> None:
        await self.life.stopping.wait()
        await self.stop_triggers(FLUSH_TIMEOUT_S)
        await self.flush_fired(FLUSH_TIMEOUT_S)
        with anyio.CancelScope(shield=True):
            try:
                async with self.pool.acquire() as conn:
                    await conn.execute(q("unregister_triggerer"), self.id)
                await bus.publish(self.redis, [(self.streams.triggers, TriggersPending())])
            except DB_ERRORS + bus.REDIS_ERRORS as exc:
                log.warning("triggerer_unregister_failed", error=str(exc))
        tg_scope.cancel()

    def start_loops(self, tg) -> None:
        """Everything but claiming: shutdown, heartbeat, the event writers, the watchdog,
        the collector's control."""
        tg.start_soon(self.shutdown, tg.cancel_scope)
        tg.start_soon(self.heartbeat_loop)
        for _ in range(WRITERS):
            tg.start_soon(self.write_fired)
        tg.start_soon(self.crash_loop)
        tg.start_soon(self.watchdog_loop)
        tg.start_soon(self.gc_loop)
        tg.start_soon(AssetWatchers(self).run)  # assets: AssetWatcher triggers

    def status(self) -> str:
        return f"{len(self.running)} triggers running, {self.fired} fired"


def airflow_triggers(settings: Settings):
    """``triggerer.airflow_triggers``, imported once Airflow's home is set.

    Importing Airflow configures logging its own way; Sluice's is put back, so the
    daemon's lines and the triggers' own (``self.log``) stay one JSON stream.
    """
    use_airflow_home(settings.home)
    module = importlib.import_module("triggerer.airflow_triggers")
    configure_logging()
    return module


def install_comms(airflow, settings: Settings, pool: asyncpg.Pool) -> None:
    """Answer the triggers' calls to the server (connections, variables, states) from PostgreSQL."""
    from shared.secrets import secrets_for

    airflow.TriggerComms(pool, secrets_for(settings.home)).install()


async def run(settings: Settings, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
    db_url, redis_url = settings.require_urls()
    airflow = airflow_triggers(settings)
    add_dags_folder_to_path(settings.dags_folder)
    life = Lifecycle("triggerer")
    pool = await create_pool(db_url, max_size=10)
    redis = bus.connect(redis_url)
    trig = None
    try:
        await bus.wait_for_redis(redis)
        install_comms(airflow, settings, pool)
        trig = Triggerer(settings, pool, redis, life, airflow)
        # what importing Airflow made lives as long as the process: frozen, out of the
        # collector's full passes, which at 100,000 triggers stall the loop for seconds
        trig.gc.start()
        await trig.consumer.ensure_groups()
        await trig.register()
        async with anyio.create_task_group() as tg:
            tg.start_soon(life.watch_signals, tg.cancel_scope)
            trig.start_loops(tg)
            tg.start_soon(serve_triggerer, trig)  # /metrics and /health
            tg.start_soon(life.watchdog, trig.status)
            log.info("triggerer_ready", triggerer_id=trig.id,
                     capacity=settings.triggerer_capacity)
            sd_notify("READY=1", f"STATUS={trig.status()}")
            task_status.started()
            await trig.claim_loop(tg)
    finally:
        with anyio.CancelScope(shield=True):
            if trig is not None:  # triggers outlive a task group that ended in an error
                await trig.stop_triggers(FLUSH_TIMEOUT_S)
            await redis.aclose()
            await pool.close()
        log.info("triggerer_stopped")
