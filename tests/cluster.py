"""The three daemons as real processes, for end-to-end tests.

Settings are tuned for fast failure detection (short heartbeats and sweeps);
every wait is on a condition with a timeout, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
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


@asynccontextmanager
async def own_cluster(services: tuple[str, str], template_db: str, root: Path, *, name: str,
                      dags: Path | None = None,
                      own_airflow_home: bool = True) -> AsyncIterator[Cluster]:
    """A Cluster on a database of its own, its daemons not started: the module starts them.

    The database ``sluice_<name>_<random>`` is a copy of ``template_db`` on the ``services``
    server, and the stream prefix is random, so modules running side by side never meet.
    ``root/dags`` is a copy of ``dags`` (without ``__pycache__``), or empty when ``dags`` is
    None. With ``own_airflow_home`` the daemons drop the test process's AIRFLOW_HOME and use
    their own, ``$SLUICE_HOME/airflow``, as a deployment does; without it they share the test
    process's. On exit, however the body ends, every daemon is stopped and the database
    dropped (forcing off any connection still open).
    """
    admin_url, redis_url = services
    db_name = f"sluice_{name}_{uuid.uuid4().hex[:12]}"
    await admin_execute(admin_url, f'CREATE DATABASE "{db_name}" TEMPLATE "{template_db}"')
    cluster = None
    try:
        if dags is None:
            (root / "dags").mkdir()
        else:
            shutil.copytree(dags, root / "dags", ignore=shutil.ignore_patterns("__pycache__"))
        cluster = Cluster(root, db_url=f"{admin_url.rpartition('/')[0]}/{db_name}",
                          redis_url=redis_url, prefix=f"t{uuid.uuid4().hex[:10]}",
                          dags_folder=root / "dags")
        if own_airflow_home:
            cluster.env.pop("AIRFLOW_HOME", None)
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop_all()
        await admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


async def admin_execute(admin_url: str, statement: str) -> None:
    """Run one statement (CREATE/DROP DATABASE cannot run in a transaction) as the admin."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


# --- helpers the end-to-end modules share --------------------------------
async def run_once(cluster: Cluster, dag_id: str, parse_timeout: float = 120.0,
                   run_timeout: float = 120.0) -> tuple[str, dict]:
    """Trigger ``dag_id`` once it is parsed: its run id and its finished run's document.

    The default timeouts are generous: each daemon imports Airflow as it starts, and the machine
    may be loaded; every wait ends as soon as its condition holds."""
    await cluster.wait_dag(dag_id, timeout=parse_timeout)
    run_id = await cluster.trigger(dag_id)
    return run_id, await cluster.wait_run(run_id, run_timeout)


def tasks_of(doc: dict) -> dict[tuple[str, int], dict]:
    """A run document's instances by (task_id, map_index)."""
    return {(t["task_id"], t["map_index"]): t for t in doc["tasks"]}


def states(doc: dict) -> dict[str, str]:
    """Each instance's state, keyed ``task_id`` or, for a mapped one, ``task_id[map_index]``."""
    return {t["task_id"] if t["map_index"] < 0 else f"{t['task_id']}[{t['map_index']}]": t["state"]
            for t in doc["tasks"]}


def task_log_path(cluster: Cluster, doc: dict, task_id: str, map_index: int = -1,
                  attempt: int = 1) -> Path:
    """Where the worker writes one try's log, in Airflow's layout under ``$SLUICE_HOME/logs``."""
    folder = cluster.root / "home" / "logs" / f"dag_id={doc['dag_id']}" / \
        f"run_id={doc['run_id']}" / f"task_id={task_id}"
    if map_index >= 0:
        folder /= f"map_index={map_index}"
    return folder / f"attempt={attempt}.log"


def task_log(cluster: Cluster, doc: dict, task_id: str, map_index: int = -1,
             attempt: int = 1) -> str:
    """One try's log as the worker wrote it; empty if it has none (yet)."""
    path = task_log_path(cluster, doc, task_id, map_index, attempt)
    return path.read_text() if path.exists() else ""


def log_events(cluster: Cluster, name: str) -> list[dict]:
    """The JSON lines of one daemon's log, in order (other lines skipped)."""
    out = []
    for line in cluster.log(name).splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def fired(cluster: Cluster, dag_id: str) -> list[dict]:
    """The triggerer's ``trigger_fired`` lines for ``dag_id``."""
    return [e for e in log_events(cluster, "triggerer")
            if e.get("event") == "trigger_fired" and e.get("dag_id") == dag_id]
