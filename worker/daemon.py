"""The worker daemon: claim task instances from queue streams, run them, record the outcome.

Reads only as many messages as it has free slots, claims them with one
guarded ``UPDATE`` (a duplicate delivery claims nothing), acks after that
commit, and heartbeats what it runs. On SIGTERM it stops reading, lets
running tasks finish within the grace period and hands the rest back as
``queued`` at the same try, for another worker.

The worker also serves Airflow's Execution API, and each claimed try runs in a
slot process (``worker.sdk_slots``) with Airflow's own task runner: the try's
outcome, XComs and wake-ups are written by the API calls the SDK makes. A try
whose end never reached the API (its slot died, wedged past
``execution_timeout`` or could not report) is failed by the worker through one
guarded write (up_for_retry or failed by the task's retry rule).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import asyncpg
import structlog
from structlog.contextvars import bound_contextvars

from shared import bus
from shared.airflow_spec.loading import airflow_home, use_airflow_home
from shared.config import Settings
from shared.daemon import Lifecycle, sd_notify
from shared.db import DB_ERRORS, backoff_delays, create_pool, persist, q
from shared.messages import RunChanged, RunTask, TriggersPending
from shared.serialization import DagSpec
from shared.tasklogs import log_path
from shared.textcap import cap_error
from worker.kubernetes import KubernetesConfigError, KubernetesPods, OrphanReaper, PodSlot
from worker.logserver import serve_sides
from worker.sdk_slots import KILL_GRACE_S, SdkSlot, slot_environment, start_slots
from worker.sdk_zygote import ForkServer

log = structlog.get_logger()
T = TypeVar("T")
TRANSIENT = DB_ERRORS + bus.REDIS_ERRORS  # a lost connection: retried, never blamed on a message


async def until_reachable(what: str, op: Callable[[], Awaitable[T]]) -> T:
    """Run a read until PostgreSQL answers, retrying connection errors with backoff."""
    for delay in backoff_delays():
        try:
            return await op()
        except DB_ERRORS as exc:
            log.warning("database_unreachable", op=what, error=str(exc) or type(exc).__name__,
                        retry_in_s=round(delay, 2))
        await anyio.sleep(delay)
    raise AssertionError("unreachable")


class Worker:
    airflow = True  # the runtime label shared.metrics reads (tries always run on the Task SDK)

    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis, life: Lifecycle):
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.life = life
        self.id = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.streams = bus.Streams(settings.stream_prefix)
        self.consumer = bus.Consumer(
            redis, [self.streams.queue(n) for n in settings.queues], bus.WORKER_GROUP,
            bus.consumer_name("worker"), deadletter=self.streams.deadletter,
            claim_interval_s=settings.claim_interval_s)
        dags, home = Path(settings.dags_folder).resolve(), airflow_home(settings.home)
        self.fork_server: ForkServer | None = None
        self.pods: KubernetesPods | None = None
        if settings.worker_executor == "kubernetes":  # a pod per try: worker.kubernetes
            self.pods = KubernetesPods(settings, self.id, self._pod_spec, self._ended_here)
            self.idle = [PodSlot(self.pods) for _ in range(settings.kubernetes_max_pods)]
        else:  # one fork server per worker: Airflow imported once, every slot forked from it
            self.fork_server = ForkServer(dags, slot_environment(os.environ, home, dags))
            self.idle = [SdkSlot(dags, home, fork_server=self.fork_server)
                         for _ in range(settings.worker_concurrency)]
        self.api: SdkApi | None = None  # the Execution API the slots call (set by run)
        self._changed = anyio.Event()  # set (and replaced) whenever running/idle/stopping change
        self.running: dict[int, dict] = {}  # held by this worker, heartbeated
        self.finishing: set[int] = set()  # outcome in hand, being written: never handed back
        self.scopes: dict[int, anyio.CancelScope] = {}  # each running body, to stop it
        self.slot_of: dict[int, SdkSlot] = {}  # the slot each running body is on
        self.done_count = 0
        self._wakes: dict[tuple, object] = {}  # wake-ups waiting to be sent, in order, once each
        self._waking = False
        self._read_scope: anyio.CancelScope | None = None
        # who runs the claimed tries, as the SDK's start call would report it (a pod reports its
        # own); asked at the first claim, once the Execution API has imported Airflow and set
        # the log format back to JSON
        self._host: tuple[str | None, str | None] | None = None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _wait_until(self, condition: Callable[[], object]) -> None:
        while not condition():
            await self._changed.wait()

    # --- intake -----------------------------------------------------------
    async def consume(self, tg) -> None:
        delays = backoff_delays()
        while not self.life.stopping.is_set():
            await self._wait_until(lambda: self.idle or self.life.stopping.is_set())
            try:
                entries = await self._read(len(self.idle))
                await self.consumer.handle(entries, lambda batch: self.start(batch, tg),
                                           transient=TRANSIENT)
                delays = backoff_delays()
            except TRANSIENT as exc:  # unacked entries come back (claimed after an interval)
                delay = next(delays)
                log.warning("worker_connection_error", error=str(exc), retry_in_s=round(delay, 2))
                with anyio.move_on_after(delay):
                    await self.life.stopping.wait()

    async def _read(self, count: int) -> list:
        self.consumer.count = count
        with anyio.CancelScope() as scope:
            self._read_scope = scope
            try:
                if not self.life.stopping.is_set() and count:
                    return await self.consumer.read(5_000)
            finally:
                self._read_scope = None
        return []

    async def start(self, entries: list, tg) -> None:
        """Claim the delivered instances and start each on an idle slot.

        Raises before starting anything when an entry is not a ``run_task`` or the
        claim fails, so the consumer can try each entry alone (``bus.isolate``).
        """
        for _, entry in entries:
            if not isinstance(entry.message, RunTask):
                raise ValueError(f"a {entry.message.kind!r} message does not belong on a queue")
        for req in await self.claim(entries):
            tg.start_soon(self.execute, req, self.idle.pop())

    async def claim(self, entries: list) -> list[dict]:
        """Claim the delivered instances still queued at their try: one statement."""
        msgs = [e.message for _, e in entries]
        if not msgs:
            return []
        if self._host is None:
            self._host = (None, None) if self.pods is not None else task_host()
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(q("claim_tis"), [m.ti_id for m in msgs],
                                    [m.try_number for m in msgs], self.id, *self._host)
            reqs = [self._request(row) for row in rows]
            if self.pods is None:  # a slot on this host starts the try without the API's call
                for req, row in zip(reqs, rows, strict=True):
                    req["ti_context"] = await start_context(conn, row)
        return reqs

    def _request(self, ti) -> dict:
        iso = lambda d: d.isoformat() if d else None  # noqa: E731
        path = log_path(self.settings.logs_dir, ti["dag_id"], ti["run_id"], ti["task_id"],
                        ti["map_index"], ti["try_number"])
        return {
            "ti_id": ti["id"], "run_pk": ti["run_pk"], "clear_number": ti["clear_number"],
            "dag_id": ti["dag_id"],
            "run_id": ti["run_id"], "task_id": ti["task_id"], "map_index": ti["map_index"],
            "try_number": ti["try_number"], "max_tries": ti["max_tries"],
            "fileloc": ti["fileloc"], "run_type": ti["run_type"],
            "logical_date": iso(ti["logical_date"]),
            "data_interval_start": iso(ti["data_interval_start"]),
            "data_interval_end": iso(ti["data_interval_end"]),
            "run_start_date": iso(ti["run_start_date"]), "conf": ti["conf"],
            "next_method": ti["next_method"], "next_kwargs": ti["next_kwargs"],
            "start_date": iso(ti["start_date"]),
            "log_path": str(path),
            "uuid": str(ti["uuid"]) if ti.get("uuid") else None,
        }

    # --- running ------------------------------------------------------------
    async def execute(self, req: dict, slot) -> None:
        """Run one claimed try on ``slot`` and see its outcome written.

        Never raises but for cancellation: a fault while handling this try
        (writing its outcome, say) is logged and costs this try only; the
        instance, no longer heartbeated, is failed by the scheduler's repair.
        """
        ids = {k: req[k] for k in ("dag_id", "run_id", "task_id", "map_index", "try_number")}
        with bound_contextvars(**ids):
            await self._end_earlier_try(req["ti_id"])
            self.running[req["ti_id"]] = req
            self.slot_of[req["ti_id"]] = slot
            try:
                log.info("task_started")
                with anyio.CancelScope() as scope:
                    self.scopes[req["ti_id"]] = scope
                    result = await self.api.run(req, slot)
                if scope.cancelled_caught:  # stop_taken_away killed the body
                    log.warning("task_killed", reason="its instance changed state elsewhere")
                    return
                self.finishing.add(req["ti_id"])
                await self.finish_sdk(req, result)
                if slot.tries_run >= self.settings.runner_max_tasks:
                    await slot.stop()
            except Exception as exc:  # noqa: BLE001 - one try's fault must not stop the others
                log.exception("task_handling_failed", error=f"{type(exc).__name__}: {exc}")
                with anyio.CancelScope(shield=True):
                    await _kill_quietly(slot)
            finally:
                self.running.pop(req["ti_id"], None)
                self.scopes.pop(req["ti_id"], None)
                self.slot_of.pop(req["ti_id"], None)
                self.finishing.discard(req["ti_id"])
                self.api.forget(req)
                self.idle.append(slot)
                self._notify()

    async def finish_sdk(self, req: dict, result) -> None:
        """A try the Task SDK ran: recorded already, unless its end never reached the API.

        Then (its slot died or wedged, or the API could not take the end) the try
        fails here: up_for_retry or failed by the task's retry rule, guarded on the
        instance still being ours.
        """
        if result.reported:
            self.done_count += 1
            log.info("task_finished", state=result.state, error=result.error,
                     wall_s=result.wall_s, cpu_s=result.cpu_s)
            if result.error and result.state in ("failed", "up_for_retry"):
                await self._keep_error(req, result.error)
            return
        # a try the SDK saw to its end ran its callbacks in the slot: none owed (state None:
        # the slot died or was killed first)
        await self.fail_lost(
            req, result.error or f"the try ended in state {result.state} without reporting it",
            callbacks_owed=result.state is None)

    async def _keep_error(self, req: dict, error: str) -> None:
        """Store why a try the SDK reported failed (its state payload has no room for it), for
        ``runs show``, the API and the try's history. Guarded on the try: a next try already
        started keeps its own."""
        async def write(text: str) -> None:
            async with self.pool.acquire() as conn:
                await conn.execute(q("keep_try_error"), req["ti_id"], req["try_number"],
                                   cap_error(text))
        try:
            await persist(lambda: write(error), what="try_error")
        except asyncpg.PostgresError as exc:  # the error text itself is unstorable (a NUL byte)
            log.error("task_outcome_unstorable", error=str(exc))
            why = f"the outcome of this try could not be stored: {type(exc).__name__}: {exc}"
            await persist(lambda: write(why), what="try_error")

    async def _spec(self, dag_id: str) -> DagSpec | None:
        async with self.pool.acquire() as conn:
            raw = await conn.fetchval(q("task_spec"), dag_id)
        return DagSpec.model_validate(raw) if raw else None

    async def _pod_spec(self, dag_id: str, task_id: str) -> tuple[dict | None, float | None]:
        """A task's ``pod_override`` and ``execution_timeout`` (seconds), for its pod."""
        spec = await until_reachable("task_spec", lambda: self._spec(dag_id))
        if spec is None or task_id not in spec.task_map:
            return None, None
        task = spec.task(task_id)
        return task.pod_override, task.execution_timeout_s

    async def ended_tries(self, uuids: list[str], ago_s: float) -> set[str]:
        """Which of these tries (uuids) this installation knows as ended over ``ago_s`` ago."""
        async with self.pool.acquire() as conn:
            return {r["uuid"] for r in await conn.fetch(q("ended_tries"), uuids, float(ago_s))}

    def _ended_here(self, ti_uuid: str) -> bool:
        """Whether the Execution API committed the end of the try ``ti_uuid``."""
        ti_id = self.api.by_uuid.get(str(ti_uuid)) if self.api is not None else None
        return ti_id is not None and ti_id in self.finishing

    async def fail_lost(self, req: dict, error: str, *, callbacks_owed: bool = True) -> None:
        """Fail a try whose end never reached the API, in one guarded statement, then wake
        the scheduler: up_for_retry (after the task's retry delay) or failed.

        Never dropped for a connection loss: the write is retried (each attempt shielded)
        until PostgreSQL is back, while the heartbeat keeps the instance ours. A retry after
        a commit whose reply was lost matches nothing. ``callbacks_owed``: the task's
        failure or retry callbacks and email did not run in the slot (the scheduler runs them).
        """
        error = cap_error(error)
        delay = await until_reachable("retry_delay", lambda: self._retry_delay(req))
        try:
            row = await persist(lambda: self._record(req, error, delay, callbacks_owed),
                                 what="finish")
        except asyncpg.PostgresError as exc:  # the error text itself is unstorable
            log.error("task_outcome_unstorable", error=str(exc))
            error = f"the outcome of this try could not be stored: {type(exc).__name__}: {exc}"
            row = await persist(lambda: self._record(req, error, delay, callbacks_owed),
                                 what="finish")
        if row is None:
            log.info("task_result_discarded", reason="instance no longer ours")
            return
        self.done_count += 1
        try:
            await bus.publish(self.redis, [(self.streams.events, RunChanged(run_pk=req["run_pk"]))])
        except bus.REDIS_ERRORS as exc:  # the scheduler's repair sweep catches up
            log.warning("wakeup_not_sent", error=str(exc))
        # logged after the wake-up, which is on the path to the next task's start
        log.info("task_finished", state=row["state"], error=error)

    async def _record(self, req: dict, error: str | None, delay_s: float, callbacks_owed: bool):
        """The lost try's failure, and the task callbacks and email it owes (the scheduler
        runs them: scheduler/callbacks.py), in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                q("finish_ti"), req["ti_id"], req["try_number"], "retry", error, None,
                float(delay_s), self.id, [], [], None, None)
            if row is not None and callbacks_owed:
                await conn.execute(q("request_task_callback"), req["ti_id"], req["try_number"],
                                   error or "the try failed outside its task process")
            return row

    async def _retry_delay(self, req: dict) -> float:
        spec = await self._spec(req["dag_id"])
        if spec is None or req["task_id"] not in spec.task_map:
            return 0.0
        return spec.task(req["task_id"]).retry_policy().delay_after(
            req["dag_id"], req["task_id"], req["logical_date"], req["try_number"]) or 0.0

    # --- background ------------------------------------------------------------
    async def heartbeat(self) -> None:
        """Keep what we hold ours (the scheduler fails instances whose heartbeat goes stale).

        A failed beat is retried at once with backoff capped at the interval: the first
        error after a restart is usually one stale pooled connection, not worth a silence."""
        every_s = self.settings.worker_heartbeat_s
        retry_delays = None
        while not self.life.stopping.is_set() or self.running:
            await anyio.sleep(every_s if retry_delays is None else next(retry_delays))
            if not self.running:
                continue
            try:
                held = list(self.running)
                async with self.pool.acquire() as conn:
                    ours = {r["id"] for r in await conn.fetch(q("heartbeat_tis"), held, self.id)}
                self.stop_taken_away([ti_id for ti_id in held if ti_id not in ours])
                retry_delays = None
            except DB_ERRORS as exc:
                log.warning("heartbeat_failed", error=str(exc))
                retry_delays = retry_delays or backoff_delays(cap_s=every_s)

    async def _end_earlier_try(self, ti_id: int) -> None:
        """An instance cleared while its try ran here (``sluice tasks clear``) may be queued
        again and come back to this worker before a heartbeat saw the clear: its earlier
        try is stopped, and gone, before the new one starts."""
        if ti_id in self.running:
            log.warning("task_killed", reason="a new try of its instance was claimed here")
            self.stop_taken_away([ti_id])
            await self._wait_until(lambda: ti_id not in self.running)

    def stop_taken_away(self, ti_ids: list[int]) -> None:
        """Kill the bodies of instances that are no longer this worker's running tries.

        Something else changed them: a ``dagrun_timeout`` skipped them, a clear
        reset them, the scheduler judged this worker dead during a long pause.
        As in Airflow, a body whose instance was changed elsewhere (marked success or
        failed, its run cancelled) is stopped and its outcome never written: SIGTERM
        first, on which the SDK calls the operator's ``on_kill``, then its process
        group killed ``KILL_GRACE_S`` later, as Airflow's supervisor escalates.
        """
        for ti_id in ti_ids:
            scope = self.scopes.get(ti_id)
            if scope is not None and ti_id in self.running and ti_id not in self.finishing:
                if (slot := self.slot_of.get(ti_id)) is not None:
                    slot.cancel_grace_s = KILL_GRACE_S  # its on_kill runs first, as in Airflow
                scope.cancel()

    async def stop_reading_on_shutdown(self) -> None:
        await self.life.stopping.wait()
        if self._read_scope is not None:
            self._read_scope.cancel()
        self._notify()

    async def drain(self, tg_scope: anyio.CancelScope) -> None:
        """After SIGTERM: wait for running tasks up to the grace period, then hand back the rest.

        Outcomes already in hand are not handed back: they are written, however long
        PostgreSQL takes to come back (a second signal cancels that wait).
        """
        await self.life.stopping.wait()
        with anyio.move_on_after(self.settings.worker_grace_period_s):
            await self._wait_until(lambda: not self.running)
        held = [req for ti_id, req in self.running.items() if ti_id not in self.finishing]
        if held:
            await self.hand_back(held)
        if self.finishing:
            log.warning("waiting_for_outcome_writes", count=len(self.finishing))
            await self._wait_until(lambda: not self.finishing)
        tg_scope.cancel()

    async def hand_back(self, held: list[dict]) -> None:
        log.warning("handing_back_tasks", count=len(held))
        queues = await persist(lambda: self._hand_back(held), what="hand_back")
        for req in held:
            self.running.pop(req["ti_id"], None)
        messages = [(self.streams.queue(queue), RunTask(ti_id=req["ti_id"], try_number=req["try_number"]))
                    for req, queue in zip(held, queues, strict=True) if queue is not None]
        try:
            await bus.publish(self.redis, messages)
        except bus.REDIS_ERRORS as exc:  # the scheduler re-sends what is owed to a queue
            log.warning("hand_back_not_sent", error=str(exc))

    async def _hand_back(self, held: list[dict]) -> list[str | None]:
        async with self.pool.acquire() as conn, conn.transaction():
            return [await conn.fetchval(q("hand_back_ti"), req["ti_id"], req["try_number"], self.id)
                    for req in held]

    def status(self) -> str:
        return f"{len(self.running)} running, {len(self.idle)} idle, {self.done_count} done"

    async def wake(self, messages: list) -> None:
        """Route the Execution API's wake-ups: triggers to the triggerer, the rest to the
        scheduler; one pipelined round trip at a time.

        Wake-ups that arrive while one is being sent are sent together next, each once
        (eight slots ending tries of one run make one ``run_changed``), by the call
        already sending: theirs return at once, their commit done. A failed send is
        logged and dropped (the scheduler's and triggerer's sweeps catch up), never
        raised into the call that made the change.
        """
        for m in messages:
            self._wakes.setdefault((type(m), getattr(m, "run_pk", None)), m)
        if self._waking:
            return
        self._waking = True
        try:
            while self._wakes:
                batch = list(self._wakes.values())
                self._wakes.clear()
                try:
                    await bus.publish(self.redis, [
                        (self.streams.triggers if isinstance(m, TriggersPending)
                         else self.streams.events, m) for m in batch])
                except bus.REDIS_ERRORS as exc:
                    log.warning("wakeup_not_sent", error=str(exc), count=len(batch))
        finally:
            self._waking = False

    def ended(self, ti_uuid) -> None:
        """The Execution API committed this try's end: it is no longer to be killed or handed back."""
        ti_id = self.api.by_uuid.get(str(ti_uuid))
        if ti_id is not None:
            self.finishing.add(ti_id)


def _check_pods_reach_the_api(settings: Settings) -> None:
    """A Kubernetes worker's pods call its Execution API over the network: at a fixed port
    they are told of (``SLUICE_KUBERNETES_API_URL``), which must not be loopback-only."""
    if not settings.kubernetes_api_url:
        raise SystemExit("a Kubernetes worker's pods call its Execution API: set "
                         "SLUICE_KUBERNETES_API_URL to the address they reach it at")
    if settings.execution_api_port == 0:
        raise SystemExit("a Kubernetes worker's Execution API needs a fixed port the pods are "
                         "told of: set SLUICE_EXECUTION_API_PORT (and SLUICE_KUBERNETES_API_URL)")
    if settings.execution_api_host in ("127.0.0.1", "::1", "localhost"):
        log.warning("execution_api_loopback_only", host=settings.execution_api_host,
                    hint="pods reach it only with hostNetwork: set SLUICE_EXECUTION_API_HOST "
                         "to an address the pods can reach (0.0.0.0)")


async def _connect_pods(pods: KubernetesPods) -> None:
    try:
        await pods.connect()
    except KubernetesConfigError as exc:
        raise SystemExit(str(exc)) from None


async def _kill_quietly(slot) -> None:
    try:
        await slot.kill()
    except Exception as exc:  # noqa: BLE001 - the next run starts a new process anyway
        log.warning("slot_kill_failed", error=str(exc))


class SdkApi:
    """The worker's Execution API, and the requests its slots run tries from (each with
    its try's token and the API's URL)."""

    def __init__(self, worker: Worker):
        from shared.logging import configure_logging
        from worker.execution_api import ApiSettings, bind

        configure_logging()  # importing Airflow set its own console format: keep one JSON stream
        s = worker.settings
        self.settings = ApiSettings(home=s.home, worker_id=worker.id,
                                    api_host=s.execution_api_host, api_port=s.execution_api_port,
                                    max_map_length=s.max_map_length,
                                    max_xcom_bytes=s.max_xcom_bytes)
        self.sock = bind(s.execution_api_host, s.execution_api_port)
        # the pods of the Kubernetes mode reach the API over the network, at the URL they are told
        self.url = (s.kubernetes_api_url if s.worker_executor == "kubernetes"
                    else api_url(s.execution_api_host, self.sock.getsockname()[1]))
        self.by_uuid: dict[str, int] = {}  # running tries' uuid -> task instance id
        self.server = None

    async def serve(self, worker: Worker) -> None:
        """Serve until cancelled, or until :meth:`stop` (which also closes the socket)."""
        from worker.execution_api import create_app
        from worker.execution_api.app import embedded_server

        app = create_app(worker.pool, self.settings, wake=worker.wake, ended=worker.ended,
                         live=lambda ti_uuid: str(ti_uuid) in self.by_uuid)
        self.server = embedded_server(app)
        await self.server.serve(sockets=[self.sock])

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True

    async def run(self, req: dict, slot):
        from worker.execution_api import token_for

        self.by_uuid[req["uuid"]] = req["ti_id"]
        return await slot.run({
            "ti_uuid": req["uuid"], "token": token_for(self.settings, req["uuid"]),
            "api_url": self.url, "dag_id": req["dag_id"], "run_id": req["run_id"],
            "task_id": req["task_id"], "map_index": req["map_index"],
            "try_number": req["try_number"], "fileloc": req["fileloc"],
            "log_path": req["log_path"], "ti_context": req.get("ti_context")})

    def forget(self, req: dict) -> None:
        self.by_uuid.pop(req.get("uuid"), None)


def task_host() -> tuple[str, str]:
    """The host name and user a try on this worker's slots runs as (the SDK's own answers)."""
    from airflow.sdk.api.client import get_hostname, getuser

    return get_hostname(), getuser()


async def start_context(conn: asyncpg.Connection, row) -> dict | None:
    """What the Execution API's start call answers for a try just claimed (``row``), as JSON;
    None if it cannot be built (its slot then makes the start call): the claim has committed,
    so nothing here may fail the batch the try belongs to."""
    from worker.execution_api.assets import consumed_events
    from worker.execution_api.task_instances import run_context

    try:
        context = run_context(row)
        if row["run_type"] == "asset_triggered":
            context.dag_run.consumed_asset_events = await consumed_events(conn, row["dag_id"],
                                                                          row["run_id"])
        return context.model_dump(mode="json", by_alias=True)
    except Exception as exc:  # noqa: BLE001 - e.g. a run's conf the SDK's model refuses
        log.warning("start_context_failed", dag_id=row["dag_id"], run_id=row["run_id"],
                    task_id=row["task_id"], map_index=row["map_index"],
                    error=f"{type(exc).__name__}: {exc}")
        return None


def api_url(host: str, port: int) -> str:
    """The URL a slot on this machine reaches the API at (a wildcard bind: loopback)."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


async def run(settings: Settings, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
    """Run a worker until SIGTERM (draining) or a second signal (at once)."""
    db_url, redis_url = settings.require_urls()
    life = Lifecycle("worker")
    use_airflow_home(settings.home)  # before anything imports Airflow, which reads it then
    # the Execution API's calls share the pool with the worker's own
    worker_pods = settings.worker_executor == "kubernetes"
    if worker_pods:
        _check_pods_reach_the_api(settings)
    try:
        # the Execution API's calls share the pool with the worker's own (a pod's, like a slot's)
        pool_size = (min(64, settings.kubernetes_max_pods // 4 + 8) if worker_pods
                     else settings.worker_concurrency * 2 + 2)
        pool = await create_pool(db_url, max_size=max(4, pool_size))
        redis = bus.connect(redis_url)
        worker = Worker(settings, pool, redis, life)
    except KubernetesConfigError as exc:
        raise SystemExit(str(exc)) from None
    try:
        await bus.wait_for_redis(redis)
        await worker.consumer.ensure_groups()
        if worker.pods is not None:
            await _connect_pods(worker.pods)
        async with anyio.create_task_group() as tg:
            await tg.start(serve_sides, worker)  # task logs, metrics, health: before any claim
            tg.start_soon(life.watch_signals, tg.cancel_scope)
            tg.start_soon(worker.stop_reading_on_shutdown)
            tg.start_soon(worker.heartbeat)
            tg.start_soon(worker.drain, tg.cancel_scope)
            tg.start_soon(life.watchdog, worker.status)
            if worker.fork_server is not None:
                await worker.fork_server.start()  # its Airflow import runs beside the API's
            else:
                tg.start_soon(worker.pods.watch.run)
                tg.start_soon(OrphanReaper(worker.pods, worker.ended_tries).run)
            worker.api = SdkApi(worker)
            tg.start_soon(worker.api.serve, worker)
            log.info("execution_api_serving", url=worker.api.url)
            if worker.fork_server is not None:
                tg.start_soon(worker.fork_server.watch)  # restarted at once if it dies
                # every slot forked (Airflow imported) before the first claim: a try never waits
                # for the worker's start, and the worker is ready when it says so
                await start_slots(list(worker.idle))
            else:
                await worker.pods.watch.connected.wait()  # the cluster answered
            log.info("worker_ready", worker_id=worker.id, queues=settings.queues,
                     executor=settings.worker_executor, concurrency=settings.worker_capacity)
            sd_notify("READY=1", f"STATUS={worker.status()}")
            task_status.started()
            await worker.consume(tg)
    finally:
        with anyio.CancelScope(shield=True):
            for slot in worker.idle:
                await slot.stop()
            if worker.fork_server is not None:
                await worker.fork_server.stop()
            if worker.pods is not None:
                await worker.pods.close()
            await redis.aclose()
            if worker.api is not None:
                worker.api.sock.close()
            with anyio.move_on_after(5):  # a half-open connection must not hold the exit: terminate
                await pool.close()
        log.info("worker_stopped")
