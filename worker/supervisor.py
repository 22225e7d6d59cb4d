"""One task-runner child process, as the worker daemon sees it.

Sends a ``run`` request, answers the runner's calls (upstream values), and
returns its ``done`` result. Enforces ``execution_timeout`` from outside too:
a task that ignores the in-process alarm is killed with its process. A runner
that dies or is killed yields a retryable result; the worker starts a new one.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from shared.daemon import task_environment  # noqa: F401 - also imported from here

MAX_LINE = 256 * 1024 * 1024
KILL_GRACE_S = 5.0


CallHandler = Callable[[str, dict], Awaitable[Any]]


class RunnerProcess:
    def __init__(self, dags_folder: Path, max_xcom_bytes: int, max_map_length: int = 1024):
        self.dags_folder = dags_folder
        self.max_xcom_bytes = max_xcom_bytes
        self.max_map_length = max_map_length
        self.proc: Process | None = None
        self.reader: BufferedByteReceiveStream | None = None
        self.tasks_run = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        self.proc = await anyio.open_process(
            [sys.executable, "-m", "worker.runner", str(self.dags_folder), str(self.max_xcom_bytes),
             str(self.max_map_length), str(os.getpid())],
            stderr=None, env=task_environment(os.environ),
            start_new_session=True,  # group signals meant for the worker miss the task's processes
        )
        self.reader = BufferedByteReceiveStream(self.proc.stdout)
        self.tasks_run = 0

    async def _send(self, message: dict) -> None:
        await self.proc.stdin.send((json.dumps(message, separators=(",", ":")) + "\n").encode())

    async def _receive(self) -> dict:
        line = await self.reader.receive_until(b"\n", MAX_LINE)
        return json.loads(line)

    async def run(self, request: dict, on_call: CallHandler) -> dict:
        """Run one task; never raises for the task's own faults.

        The runner announces the task's ``execution_timeout``, if it has one,
        when it starts it; past that plus a grace period the process is killed.
        """
        if not self.alive:
            await self.start()
        self.tasks_run += 1
        timeout_s = None
        try:
            with anyio.CancelScope() as scope:
                await self._send({"op": "run", "request": request})
                while True:
                    message = await self._receive()
                    if message["op"] == "done":
                        return message["result"]
                    if message["op"] == "started":
                        timeout_s = message.get("timeout_s")
                        if timeout_s is not None:
                            scope.deadline = anyio.current_time() + timeout_s + KILL_GRACE_S
                        continue
                    await self._answer(message, on_call)
            raise TimeoutError
        except TimeoutError:
            await self.kill()
            return {"outcome": "retry", "retry_delay_s": None,
                    "error": f"AirflowTaskTimeout: execution_timeout of {timeout_s:g}s exceeded; "
                             "task process killed"}
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError,
                anyio.ClosedResourceError):
            code = await self.kill()
            return {"outcome": "retry", "retry_delay_s": None,
                    "error": f"task process exited unexpectedly (exit code {code})"}
        except anyio.get_cancelled_exc_class():  # handed back or forced stop: the body must not run on
            await self.kill()
            raise

    async def _answer(self, message: dict, on_call: CallHandler) -> None:
        try:
            value = await on_call(message["method"], message.get("args") or {})
            reply = {"op": "reply", "id": message["id"], "value": value}
        except Exception as exc:  # noqa: BLE001 - the error goes back to the task
            reply = {"op": "reply", "id": message["id"], "error": f"{type(exc).__name__}: {exc}"}
        await self._send(reply)

    async def kill(self) -> int | None:
        if self.proc is None:
            return None
        with anyio.CancelScope(shield=True):
            if self.proc.returncode is None:
                try:  # the runner leads its own process group: the task's children die with it
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            code = await self.proc.wait()
            await self.proc.aclose()
        self.proc = None
        return code

    async def stop(self) -> None:
        """Close stdin so an idle runner exits; kill it if it does not."""
        if self.proc is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self.proc.stdin.aclose()
            except anyio.BrokenResourceError:
                pass
            with anyio.move_on_after(2):
                await self.proc.wait()
            await self.kill()
