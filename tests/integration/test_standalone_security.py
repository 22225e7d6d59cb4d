"""``sluice standalone`` on a shared host, as real processes.

Another local user can neither read its files nor log in to its embedded
servers, and the embedded servers are supervised like the daemons: a
SIGKILLed postmaster or Valkey is reaped and restarted on its port, and the
daemons carry on with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import asyncpg
import psutil
import pytest
import redis

from tests.cluster import FAST, wait_for
from tests.faults import private_home
from tests.security import as_another_user, assert_private, psql

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(240)

DAG = '''
from datetime import datetime

from airflow.sdk import dag, task


@dag(schedule=None, start_date=datetime(2024, 1, 1))
def hello():
    @task
    def answer():
        return 42

    answer()


hello()
'''


class Standalone:
    """A ``sluice standalone`` process serving one DAG from a home of its own."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.dags = root / "dags"
        self.log_path = root / "standalone.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        self.env = {**env, **FAST, "SLUICE_HOME": str(self.home), "PYTHONPATH": str(REPO)}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.dags.mkdir(parents=True, exist_ok=True)
        (self.dags / "hello.py").write_text(DAG)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shared.cli", "standalone", "--dags-folder", str(self.dags)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise

    @property
    def urls(self) -> dict:
        return json.loads((self.home / "standalone.json").read_text())

    async def ready(self) -> None:
        async def dag_known() -> bool:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            if not (self.home / "standalone.json").exists():
                return False
            conn = await asyncpg.connect(self.urls["database_url"])
            try:
                return bool(await conn.fetchval("SELECT 1 FROM dag WHERE dag_id = 'hello'"))
            finally:
                await conn.close()

        await wait_for(dag_known, timeout=90, what="standalone serving DAG hello")

    async def trigger(self) -> dict:
        done = await anyio.run_process(
            [sys.executable, "-m", "shared.cli", "dags", "trigger", "hello", "--wait", "--json",
             "--timeout", "60"], env=self.env, check=False)
        assert done.returncode == 0, (done.stdout, done.stderr, self.log_path.read_text()[-3000:])
        return json.loads(done.stdout)

    def daemons(self) -> dict[int, str]:
        """The daemons' pids (children running ``python -m <daemon>``)."""
        children = psutil.Process(self.proc.pid).children()
        return {p.pid: p.cmdline()[-1] for p in children if p.name().startswith("python")}

    def server_pid(self, name: str) -> int | None:
        for child in psutil.Process(self.proc.pid).children():
            with contextlib.suppress(psutil.Error):
                if child.name() == name and child.status() != psutil.STATUS_ZOMBIE:
                    return child.pid
        return None


@pytest.fixture
async def standalone() -> AsyncIterator[Standalone]:
    with private_home("standalone") as root:
        server = Standalone(root)
        server.start()
        try:
            await server.ready()
            yield server
        finally:
            server.stop()


async def test_standalone_keeps_its_files_and_servers_to_its_user(standalone: Standalone):
    doc = await standalone.trigger()
    assert doc["state"] == "success"
    home = standalone.home
    assert (home / "standalone.json").stat().st_mode & 0o777 == 0o600
    assert list((home / "logs").rglob("*.log")), "a task log"
    assert_private(home)

    urls = standalone.urls
    pg, rd = urlsplit(urls["database_url"]), urlsplit(urls["redis_url"])
    assert pg.password and rd.password
    if os.geteuid() == 0:  # the other user is `nobody`
        for path in (home / "standalone.json", next((home / "logs").rglob("*.log"))):
            read = as_another_user(["cat", str(path)])
            assert read.returncode != 0 and "Permission denied" in read.stderr, read
    login = as_another_user(psql("127.0.0.1", pg.port))
    assert login.returncode == 2 and "no password supplied" in login.stderr, login
    client = redis.Redis(host="127.0.0.1", port=rd.port)
    try:
        with pytest.raises(redis.AuthenticationError):
            client.ping()
    finally:
        client.close()
    assert standalone.stop() == 0
    assert not (home / "standalone.json").exists()


async def test_a_killed_embedded_server_is_restarted_and_the_daemons_reconnect(
    standalone: Standalone,
):
    assert (await standalone.trigger())["state"] == "success"
    daemons = standalone.daemons()
    assert sorted(daemons.values()) == ["apiserver", "scheduler", "triggerer", "worker"]
    urls = standalone.urls

    for count, name in enumerate(("postgres", "valkey-server"), start=1):
        old = standalone.server_pid(name)
        assert old is not None
        os.kill(old, signal.SIGKILL)

        async def restarted(count: int = count) -> bool:
            # logged once the new server accepts connections (crash recovery done)
            return standalone.log_path.read_text().count('"embedded_server_restarted"') == count

        await wait_for(restarted, timeout=60, what=f"{name} restarted")
        assert standalone.server_pid(name) not in (None, old)
        assert not psutil.pid_exists(old)  # reaped, not left a zombie
        assert standalone.urls == urls  # the same ports and passwords
        assert (await standalone.trigger())["state"] == "success"

    assert standalone.daemons() == daemons  # reconnected, not restarted
    log = standalone.log_path.read_text()
    assert log.count('"embedded_server_restarted"') == 2
    assert '"daemon_exited"' not in log


async def test_a_killed_standalone_takes_its_daemons_and_servers_with_it(standalone: Standalone):
    """A SIGKILL leaves no drain to the supervisor: every child still goes (a parent-death
    signal each), the api-server too, so nothing keeps its ports or its home."""
    children = psutil.Process(standalone.proc.pid).children()
    names = {p.pid: " ".join(p.cmdline()[-2:]) for p in children}
    assert any("apiserver" in n for n in names.values()), names
    os.kill(standalone.proc.pid, signal.SIGKILL)
    standalone.proc.wait()

    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    async def all_gone() -> bool:
        return all(gone(pid) for pid in names)

    await wait_for(all_gone, timeout=60,
                   what=f"children of a killed standalone to exit: {names}")
