"""The worker's handle on one slot process (``worker.sdk_slot``), which runs tries with the Task SDK.

Slots are forked by the worker's fork server (``worker.sdk_zygote``). ``run``
sends one request and returns the try's ``TryResult``; it never raises for the
task's own faults. A slot that dies mid-try (``os._exit``, a segfault, the OOM
killer, its fork server's death), overruns the task's ``execution_timeout`` by
more than the grace period, or is killed on request costs that try only: the
result says the slot was lost (the try's end was never reported to the
Execution API -- the caller's to record) and the next ``run`` forks a fresh
slot. So does a try for which no slot could be forked.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog
from anyio.streams.buffered import BufferedByteReceiveStream

from shared.daemon import task_environment
from worker.sdk_zygote import Forked, ForkServer, SlotStartError

log = structlog.get_logger()
KILL_GRACE_S = 5.0
MAX_LINE = 16 * 1024 * 1024


@dataclass(frozen=True)
class TryResult:
    """One try as the slot ended it.

    ``state`` is the state the SDK reached (``success``, ``failed``, ``up_for_retry``,
    ``skipped``, ``deferred``, ``up_for_reschedule``), ``None`` when it never got
    there; ``reported`` says the Execution API accepted it. ``slot_lost``: the slot
    died or was killed during the try, so nothing reported its end.
    """

    state: str | None
    reported: bool
    error: str | None
    wall_s: float
    cpu_s: float | None = None
    slot_lost: bool = False


def slot_environment(environ: Mapping[str, str], airflow_home: Path,
                     dags_folder: Path) -> dict[str, str]:
    """The worker's environment without Sluice's credentials, Airflow's home under Sluice's."""
    env = task_environment(environ)
    env["AIRFLOW_HOME"] = str(airflow_home)
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder)
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    return env


class SdkSlot:
    """One slot, forked by ``fork_server`` (a fork server of its own when none is given,
    stopped with the slot)."""

    def __init__(self, dags_folder: Path, airflow_home: Path, kill_grace_s: float = KILL_GRACE_S,
                 fork_server: ForkServer | None = None):
        self.dags_folder, self.airflow_home = dags_folder, airflow_home
        self.kill_grace_s = kill_grace_s
        self.own_server = fork_server is None
        self.fork_server = fork_server or ForkServer(
            dags_folder, slot_environment(os.environ, airflow_home, dags_folder))
        self.child: Forked | None = None
        self.reader: BufferedByteReceiveStream | None = None
        self.tries_run = 0
        self._lost_reason: str | None = None
        self._starting = anyio.Lock()
        #: set by the worker before it cancels a try whose instance was set to another state
        #: elsewhere (marked, cleared, its run cancelled): SIGTERM first, so the SDK calls the
        #: operator's ``on_kill``, as Airflow's supervisor stops a try the API answered 409
        self.cancel_grace_s = 0.0

    @property
    def alive(self) -> bool:
        return self.child is not None and not self.child.exited()

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None else None

    async def start(self) -> None:
        """Fork the slot, unless it runs already; ``SlotStartError`` if it cannot be."""
        async with self._starting:
            if self.alive:
                return
            await self._reap()
            self.child = await self.fork_server.fork()
            self.reader = BufferedByteReceiveStream(self.child.channel)
            self.tries_run = 0
            self._lost_reason = None

    async def run(self, request: dict) -> TryResult:
        """Run one try: ``request`` holds ``ti_uuid``, ``token``, ``api_url``, ``dag_id``,
        ``run_id``, ``task_id``, ``map_index``, ``try_number``, ``fileloc``, ``log_path``."""
        started = anyio.current_time()
        try:
            await self.start()
        except SlotStartError as exc:
            return TryResult(state=None, reported=False, error=f"no slot to run the try: {exc}",
                             slot_lost=True, wall_s=round(anyio.current_time() - started, 6))
        self.tries_run += 1
        self._lost_reason = None
        timeout_s = None
        try:
            with anyio.CancelScope() as scope:
                await self._send({"op": "run", "request": request})
                while True:
                    message = await self._receive()
                    if message["op"] == "done":
                        return TryResult(**message["result"])
                    if message["op"] == "started" and message.get("timeout_s") is not None:
                        timeout_s = message["timeout_s"]
                        scope.deadline = anyio.current_time() + timeout_s + self.kill_grace_s
            code = await self.kill(f"AirflowTaskTimeout: execution_timeout of {timeout_s:g}s "
                                   f"exceeded by over {self.kill_grace_s:g}s; slot killed")
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError,
                anyio.ClosedResourceError):
            code = await self._reap()
        except anyio.get_cancelled_exc_class():  # handed back or stopped: the task must not run on
            grace_s, self.cancel_grace_s = self.cancel_grace_s, 0.0
            await self.kill("cancelled", grace_s=grace_s)
            raise
        reason = self._lost_reason or f"task process exited unexpectedly ({describe_exit(code)})"
        return TryResult(state=None, reported=False, error=reason, slot_lost=True,
                         wall_s=round(anyio.current_time() - started, 6))

    async def kill(self, reason: str | None = "killed on request", *, grace_s: float = 0.0) -> int | None:
        """Kill the slot's process group (the slot and the programs its task started).

        With ``grace_s``, SIGTERM first, as Airflow's supervisor stops a task: the SDK
        calls the running operator's ``on_kill`` (say, to delete the pod it started);
        SIGKILL follows if the slot has not exited by then.
        """
        child = self.child
        if child is None:
            return None
        self._lost_reason = reason
        if grace_s > 0:
            child.signal_group(signal.SIGTERM)
            with anyio.CancelScope(shield=True), anyio.move_on_after(grace_s):
                await child.wait()
        child.kill()
        return await self._reap()

    async def stop(self) -> None:
        """Close the slot's channel so an idle slot exits; kill it if it does not."""
        with anyio.CancelScope(shield=True):
            if (child := self.child) is not None:
                await child.channel.aclose()
                with anyio.move_on_after(2):
                    await child.wait()
                await self.kill(None)
            if self.own_server:
                await self.fork_server.stop()

    async def _reap(self) -> int | None:
        """Wait for the slot to have exited; its exit code (``None``: unknown, its server died)."""
        child = self.child
        if child is None:
            return None
        with anyio.CancelScope(shield=True):
            code = await child.exit_code()
            if self.child is child:
                self.child = self.reader = None
                await child.channel.aclose()
        if code is None:
            self._lost_reason = self._lost_reason or "task process lost: the slot fork server died"
        return code

    async def _send(self, message: dict) -> None:
        await self.child.channel.send((json.dumps(message, separators=(",", ":")) + "\n").encode())

    async def _receive(self) -> dict:
        return json.loads(await self.reader.receive_until(b"\n", MAX_LINE))


def describe_exit(code: int | None) -> str:
    """``exit code 3`` or ``killed by SIGSEGV``."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


async def start_slots(slots: list[SdkSlot]) -> None:
    """Fork ``slots`` ahead of their first try; a slot that cannot be forked is left for
    its first try to retry (and fail with the reason)."""
    for slot in slots:
        try:
            await slot.start()
        except SlotStartError as exc:
            log.warning("slot_not_started", error=str(exc))
            return
