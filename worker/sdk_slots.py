"""The worker's handle on one slot process (``worker.sdk_slot``), which runs tries with the Task SDK.

``run`` sends one request and returns the try's ``TryResult``; it never raises
for the task's own faults. A slot that dies mid-try (``os._exit``, a segfault,
the OOM killer), overruns the task's ``execution_timeout`` by more than the
grace period, or is killed on request costs that try only: the result says
the slot was lost (the try's end was never reported to the Execution API --
the caller's to record) and the next ``run`` starts a fresh slot.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from worker.supervisor import task_environment

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
    def __init__(self, dags_folder: Path, airflow_home: Path, kill_grace_s: float = KILL_GRACE_S):
        self.dags_folder, self.airflow_home = dags_folder, airflow_home
        self.kill_grace_s = kill_grace_s
        self.proc: Process | None = None
        self.reader: BufferedByteReceiveStream | None = None
        self.tries_run = 0
        self._lost_reason: str | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self) -> None:
        self.airflow_home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.proc = await anyio.open_process(
            [sys.executable, "-m", "worker.sdk_slot", str(self.dags_folder)], stderr=None,
            env=slot_environment(os.environ, self.airflow_home, self.dags_folder),
            start_new_session=True,  # its own group: killed with every program its tasks start
        )
        self.reader = BufferedByteReceiveStream(self.proc.stdout)
        self.tries_run = 0
        self._lost_reason = None

    async def run(self, request: dict) -> TryResult:
        """Run one try: ``request`` holds ``ti_uuid``, ``token``, ``api_url``, ``dag_id``,
        ``run_id``, ``task_id``, ``map_index``, ``try_number``, ``fileloc``, ``log_path``."""
        if not self.alive:
            await self.start()
        self.tries_run += 1
        self._lost_reason = None
        started = anyio.current_time()
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
            await self.kill("cancelled")
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
        if self.proc is None:
            return None
        self._lost_reason = reason
        if grace_s > 0:
            self._signal_group(signal.SIGTERM)
            with anyio.CancelScope(shield=True), anyio.move_on_after(grace_s):
                await self.proc.wait()
        self._signal_group(signal.SIGKILL)
        return await self._reap()

    def _signal_group(self, signum: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signum)
            except ProcessLookupError:
                pass

    async def stop(self) -> None:
        """Close the slot's stdin so an idle slot exits; kill it if it does not."""
        if self.proc is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self.proc.stdin.aclose()
            except anyio.BrokenResourceError:
                pass
            with anyio.move_on_after(2):
                await self.proc.wait()
            await self.kill(None)

    async def _reap(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        with anyio.CancelScope(shield=True):
            code = await proc.wait()
            if self.proc is proc:
                self.proc = self.reader = None
                await proc.aclose()
        return code

    async def _send(self, message: dict) -> None:
        await self.proc.stdin.send((json.dumps(message, separators=(",", ":")) + "\n").encode())

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
