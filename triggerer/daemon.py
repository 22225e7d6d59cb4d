"""The triggerer daemon: run deferred tasks' triggers by the thousand in one event loop.

Claims unassigned triggers (and those of triggerers whose heartbeat expired)
up to its capacity with ``FOR UPDATE SKIP LOCKED``, by priority then age; is
woken by the triggers stream; hands the first event of each trigger back to
its task instance (``deferred -> scheduled``) and wakes the scheduler. A
trigger that fails, ends without an event or times out resumes the task with
``next_method="__fail__"``. On SIGTERM it hands its triggers back at once.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import socket
import traceback
from datetime import UTC, datetime

import anyio
import asyncpg
import structlog
from structlog.contextvars import bound_contextvars

from shared import bus
from shared.config import Settings
from shared.daemon import Lifecycle, sd_notify
from shared.dagbag import add_dags_folder_to_path
from shared.db import DB_ERRORS, Continuity, create_pool, persist, q
from shared.messages import RunChanged, TriggersPending
from shared.sdk import serde
from shared.sdk.triggers import BaseTaskEndEvent
from shared.textcap import cap_error

log = structlog.get_logger()
TRANSIENT = DB_ERRORS + bus.REDIS_ERRORS  # a lost connection: retried, never blamed on a message
BLOCKING_WARN_S = 0.2
START_CHUNK = 200  # claimed triggers started between two yields to the event loop
FLUSH_TIMEOUT_S = 10.0  # on shutdown, how long first events in hand may take to be written


def load_trigger(classpath: str, kwargs_json: str):
    """Import and construct a trigger from its serialized form."""
    from shared import compat

    compat.install_if_enabled()
    module_name, _, class_name = classpath.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**serde.loads(kwargs_json))


async def _wake_ups(entries: list) -> None:
    """The triggers stream carries wake-ups only; claiming follows in the loop."""
    for _, entry in entries:
        if not isinstance(entry.message, TriggersPending):
            raise ValueError(f"a {entry.message.kind!r} message does not belong on the triggers stream")


def _ti_ids(row: dict) -> dict:
    """The task instance a trigger row belongs to, for log lines."""
    return {k: row[k] for k in ("dag_id", "run_id", "task_id", "map_index", "try_number")}


class Triggerer:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis, life: Lifecycle):
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.life = life
        self.streams = bus.Streams(settings.stream_prefix)
        self.consumer = bus.Consumer(redis, [self.streams.triggers], bus.TRIGGERER_GROUP,
                                     bus.consumer_name("triggerer"),
                                     deadletter=self.streams.deadletter,
                                     claim_interval_s=settings.claim_interval_s)
        self.id: int | None = None
        self.running: dict[int, anyio.CancelScope] = {}
        self.fired = 0
        self.db_continuity = Continuity()  # others' heartbeats are judged only on an unbroken view
        # first events wait here for the writer, which commits them in batches
        self._fired_in, self._fired_out = anyio.create_memory_object_stream[tuple[dict, str]](
            max_buffer_size=math.inf)
        self._unwritten = 0
        self._all_written = anyio.Event()

    async def register(self) -> None:
        async with self.pool.acquire() as conn:
            self.id = await conn.fetchval(q("register_triggerer"), socket.gethostname(),
                                          os.getpid(), self.settings.triggerer_capacity)

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

    async def claim(self, tg) -> None:
        free = self.settings.triggerer_capacity - len(self.running)
        if free <= 0:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            ids = [r["id"] for r in await conn.fetch(q("claim_triggers"), self.id, free)]
            rows = await conn.fetch(q("load_triggers"), ids) if ids else []
        for n, row in enumerate(rows, start=1):
            if row["id"] not in self.running:
                scope = anyio.CancelScope()
                self.running[row["id"]] = scope
                tg.start_soon(self.run_trigger, dict(row), scope)
            if n % START_CHUNK == 0:  # let the triggers already started run meanwhile
                await anyio.sleep(0)
        if rows:
            log.info("triggers_claimed", count=len(rows), running=len(self.running))

    async def run_trigger(self, row: dict, scope: anyio.CancelScope) -> None:
        with bound_contextvars(**_ti_ids(row), trigger_id=row["id"]):
            try:
                with scope:
                    await self._run(row)
            finally:
                self.running.pop(row["id"], None)

    async def _run(self, row: dict) -> None:
        try:
            trigger = load_trigger(row["classpath"], row["kwargs"])
        except Exception as exc:  # noqa: BLE001 - the task fails, the triggerer lives on
            log.error("trigger_load_failed", classpath=row["classpath"], error=str(exc))
            await self.fail(row, "Trigger failure", exc)
            return
        timeout = row["trigger_timeout"]
        delay = None if timeout is None else (timeout - datetime.now(UTC)).total_seconds()
        try:
            with anyio.move_on_after(delay) as timer:
                async for event in trigger.run():
                    await self.fire(row, event)
                    return
            if timer.cancelled_caught:
                await self.fail(row, "Trigger timeout", None)
            else:
                await self.fail(row, "Trigger failure", RuntimeError("Trigger exited without an event"))
        except Exception as exc:  # noqa: BLE001
            log.error("trigger_failed", error=str(exc))
            await self.fail(row, "Trigger failure", exc)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await trigger.cleanup()
                except Exception as exc:  # noqa: BLE001
                    log.warning("trigger_cleanup_failed", error=str(exc))

    async def fire(self, row: dict, event) -> None:
        """Hand the first event to the task instance, then drop the trigger row.

        An ordinary event goes to the writer, which group-commits events (one
        transaction, one pipelined wake-up per run for a whole batch); until it is
        written the trigger row stays this triggerer's, so a crash re-runs the
        trigger elsewhere. An event that ends the task is written on its own.
        """
        if not isinstance(event, BaseTaskEndEvent):
            payload = serde.to_jsonable(event.payload, "trigger event payload")
            next_kwargs = {**(row.get("next_kwargs") or {}), "event": payload}
            self._unwritten += 1
            if self._all_written.is_set():
                self._all_written = anyio.Event()
            self._fired_in.send_nowait((row, json.dumps(next_kwargs)))
            return

        async def write():
            async with self.pool.acquire() as conn, conn.transaction():
                run_pk = await self._end(conn, row, event)
                await conn.execute(q("delete_trigger"), row["id"])
                return run_pk

        run_pk = await persist(write, what="trigger_event")
        self.fired += 1
        log.info("trigger_fired", resumed=run_pk is not None)
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

    async def _end(self, conn, row: dict, event: BaseTaskEndEvent) -> int | None:
        done = await conn.fetchrow(q("end_deferred_ti"), row["ti_id"], row["id"],
                                   event.task_instance_state)
        if done is not None and event.xcoms:
            keys = list(event.xcoms)
            await conn.execute(q("put_xcoms"), done["run_pk"], done["task_id"],
                               done["map_index"], keys,
                               [serde.dumps(event.xcoms[k]) for k in keys])
        return done["run_pk"] if done else None

    async def _resume(self, conn, row: dict, extra: dict, next_method: str | None = None):
        return await conn.fetchval(q("resume_ti"), row["ti_id"], row["id"],
                                   {**(row.get("next_kwargs") or {}), **extra}, next_method)

    async def fail(self, row: dict, error: str, exc: BaseException | None) -> None:
        """Resume the instance with ``__fail__`` so the worker raises and retry rules apply."""
        tb = [cap_error("".join(traceback.format_exception(exc)))] if exc is not None else []

        async def write():
            async with self.pool.acquire() as conn, conn.transaction():
                run_pk = await self._resume(conn, row, {"error": error, "traceback": tb},
                                            "__fail__")
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
                        log.warning("triggerer_row_lost_reregistering")
                        await self.register()
                    dead = []
                    if self.db_continuity.longer_than(self.settings.triggerer_heartbeat_timeout_s):
                        dead = await conn.fetch(q("release_dead_triggerers"),
                                                self.settings.triggerer_heartbeat_timeout_s)
                    owned = {r["id"] for r in await conn.fetch(q("owned_triggers"), self.id)}
                for trigger_id, scope in list(self.running.items()):
                    if trigger_id not in owned:
                        scope.cancel()
                if dead:
                    log.warning("dead_triggerers_released", count=len(dead))
                    await bus.publish(self.redis, [(self.streams.triggers, TriggersPending())])
                self.db_continuity.held()
            except DB_ERRORS + bus.REDIS_ERRORS as exc:
                self.db_continuity.broke()
                log.warning("triggerer_heartbeat_failed", error=str(exc))

    async def watchdog_loop(self) -> None:
        """Log when something blocks the event loop (a trigger doing sync I/O)."""
        while not self.life.stopping.is_set():
            before = anyio.current_time()
            await anyio.sleep(0.1)
            lag = anyio.current_time() - before - 0.1
            if lag > BLOCKING_WARN_S:
                log.warning("event_loop_blocked", blocked_s=round(lag, 3),
                            hint="a trigger is running blocking code in async def run()")

    async def shutdown(self, tg_scope: anyio.CancelScope) -> None:
        await self.life.stopping.wait()
        for scope in list(self.running.values()):
            scope.cancel()
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
        """Everything but claiming: shutdown, heartbeat, the event writer, the watchdog."""
        tg.start_soon(self.shutdown, tg.cancel_scope)
        tg.start_soon(self.heartbeat_loop)
        tg.start_soon(self.write_fired)
        tg.start_soon(self.watchdog_loop)

    def status(self) -> str:
        return f"{len(self.running)} triggers running, {self.fired} fired"


async def run(settings: Settings, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
    db_url, redis_url = settings.require_urls()
    add_dags_folder_to_path(settings.dags_folder)
    life = Lifecycle("triggerer")
    pool = await create_pool(db_url, max_size=10)
    redis = bus.connect(redis_url)
    try:
        await bus.wait_for_redis(redis)
        trig = Triggerer(settings, pool, redis, life)
        await trig.consumer.ensure_groups()
        await trig.register()
        async with anyio.create_task_group() as tg:
            tg.start_soon(life.watch_signals, tg.cancel_scope)
            trig.start_loops(tg)
            tg.start_soon(life.watchdog, trig.status)
            log.info("triggerer_ready", triggerer_id=trig.id,
                     capacity=settings.triggerer_capacity)
            sd_notify("READY=1", f"STATUS={trig.status()}")
            task_status.started()
            await trig.claim_loop(tg)
    finally:
        with anyio.CancelScope(shield=True):
            await redis.aclose()
            await pool.close()
        log.info("triggerer_stopped")
