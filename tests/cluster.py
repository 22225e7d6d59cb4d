"""The three daemons as real processes, for end-to-end tests.

Settings are tuned for fast failure detection (short heartbeats and sweeps);
every wait is on a condition with a timeout, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import asyncpg

from shared.db import _init_connection
from shared.runview import run_document

FAST = {
    "SLUICE_REPAIR_INTERVAL_S": "1",
    "SLUICE_WORKER_HEARTBEAT_S": "0.5",
    "SLUICE_WORKER_HEARTBEAT_TIMEOUT_S": "3",
    "SLUICE_DAG_DIR_LIST_INTERVAL_S": "1",
    "SLUICE_QUEUED_RESEND_AFTER_S": "5",
    "SLUICE_TRIGGERER_HEARTBEAT_S": "0.5",
    "SLUICE_TRIGGERER_HEARTBEAT_TIMEOUT_S": "3",
    "SLUICE_WORKER_GRACE_PERIOD_S": "10",
    "SLUICE_WORKER_CONCURRENCY": "4",
    "SLUICE_CLAIM_INTERVAL_S": "2",
}


async def wait_for(check: Callable[[], Awaitable[object]], timeout: float = 30.0,
                   what: str = "condition") -> object:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(delay)
        delay = min(delay * 1.5, 0.25)


class Cluster:
    def __init__(self, root: Path, *, db_url: str, redis_url: str, prefix: str, dags_folder: Path):
        self.root = root
        self.dags_folder = dags_folder
        self.db_url = db_url
        self.env = {**os.environ, **FAST, "SLUICE_DATABASE_URL": db_url,
                    "SLUICE_REDIS_URL": redis_url, "SLUICE_STREAM_PREFIX": prefix,
                    "SLUICE_DAGS_FOLDER": str(dags_folder), "SLUICE_HOME": str(root / "home"),
                    "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        self.procs: dict[str, subprocess.Popen] = {}
        self.counter = 0

    def write_dag(self, name: str, source: str) -> Path:
        path = self.dags_folder / name
        path.write_text(textwrap.dedent(source))
        return path

    def start(self, daemon: str, name: str | None = None, **env: str) -> subprocess.Popen:
        name = name or daemon
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([sys.executable, "-m", daemon], env={**self.env, **env},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def start_all(self, **env: str) -> None:
        for daemon in ("scheduler", "triggerer", "worker"):
            self.start(daemon, **env)

    def signal(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, sig)

    def stop(self, name: str, timeout: float = 20.0) -> int | None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # runner children, if any survived
        except ProcessLookupError:
            pass
        return proc.returncode

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    # --- database helpers -------------------------------------------------
    async def connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.db_url)
        await _init_connection(conn)
        return conn

    async def wait_dag(self, dag_id: str, timeout: float = 90.0, allow_errors: bool = False) -> None:
        async def present():
            conn = await self.connect()
            try:
                errors = await conn.fetch("SELECT message FROM import_error")
                found = await conn.fetchval("SELECT 1 FROM dag WHERE dag_id=$1 AND is_active", dag_id)
                if not found and errors and not allow_errors:
                    raise AssertionError("import errors: " + "; ".join(e["message"] for e in errors))
                return found
            finally:
                await conn.close()

        await wait_for(present, timeout, f"DAG {dag_id} to be parsed")

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "shared.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    async def trigger(self, dag_id: str, conf: dict | None = None,
                      allow_errors: bool = False) -> str:
        await self.wait_dag(dag_id, allow_errors=allow_errors)
        args = ["dags", "trigger", dag_id, "--json"]
        if conf:
            args += ["--conf", json.dumps(conf)]
        out = await anyio.to_thread.run_sync(lambda: self.cli(*args))
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["run_id"]

    async def run_doc(self, run_id: str) -> dict:
        conn = await self.connect()
        try:
            return (await run_document(conn, run_id))["doc"]
        finally:
            await conn.close()

    async def wait_run(self, run_id: str, timeout: float = 60.0) -> dict:
        async def finished():
            doc = await self.run_doc(run_id)
            return doc if doc["state"] in ("success", "failed") else None

        return await wait_for(finished, timeout, f"run {run_id} to finish")

    @staticmethod
    def by_task(doc: dict) -> dict[str, dict]:
        return {t["task_id"]: t for t in doc["tasks"] if t["map_index"] == -1}
