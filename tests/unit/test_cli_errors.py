"""A service the command line cannot reach is one line naming it (password hidden), exit 2.

Real processes: the ``sluice`` CLI and a daemon started from it, pointed at
ports where nothing listens, or at a database without Sluice's schema.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import asyncpg
import pytest

from tests.faults import free_port

pytestmark = pytest.mark.timeout(60)

SECRET = "s3cret-pw"


def _env(db_url: str, redis_url: str, tmp_path) -> dict[str, str]:
    return {**os.environ, "SLUICE_DATABASE_URL": db_url, "SLUICE_REDIS_URL": redis_url,
            "SLUICE_HOME": str(tmp_path / "home"), "SLUICE_DAGS_FOLDER": str(tmp_path),
            "SLUICE_STREAM_PREFIX": f"t{uuid.uuid4().hex[:10]}"}


def _sluice(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "shared.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _one_line(proc: subprocess.Popen, daemon: bool = False) -> str:
    """The one line said; a daemon's own log lines before it are JSON, no traceback."""
    out, err = proc.communicate(timeout=40)
    assert (proc.returncode, out) == (2, ""), err
    *logged, line = err.splitlines()
    assert not logged or daemon, err
    assert all(json.loads(x)["level"] == "info" for x in logged), err
    assert SECRET not in err
    return line


def test_unreachable_database_is_one_line_and_exit_2(tmp_path, redis_url):
    port = free_port()
    url = f"postgresql://sluice:{SECRET}@127.0.0.1:{port}/sluice"
    env = _env(url, redis_url, tmp_path)
    commands = [("runs", "list"), ("runs", "show", "manual__x"), ("runs", "clear", "d", "r"),
                ("dags", "list"), ("dags", "trigger", "d", "--wait"), ("db", "migrate")]
    procs = [_sluice(env, *c) for c in commands]  # at once: each retries for a few seconds
    for proc in procs:
        assert _one_line(proc).startswith(
            f"database at postgresql://sluice:***@127.0.0.1:{port}/sluice is unreachable: ")


async def test_unreachable_redis_is_said_before_a_run_exists(tmp_path, db, db_url):
    await db.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized)"
                     " VALUES ('d', 'd.py', '', '{\"schedule\": null}')")
    port = free_port()
    env = _env(db_url, f"redis://:{SECRET}@127.0.0.1:{port}/0", tmp_path)
    line = _one_line(_sluice(env, "dags", "trigger", "d", "--wait"))
    assert line.startswith(f"redis at redis://:***@127.0.0.1:{port}/0 is unreachable: ")
    assert await db.fetchval("SELECT count(*) FROM dag_run") == 0


async def test_daemon_on_a_database_without_schema_says_so(tmp_path, services, redis_url):
    admin_url, _ = services
    name = f"sluice_e_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rpartition("/")[0] + "/" + name
    try:
        line = _one_line(_sluice(_env(url, redis_url, tmp_path), "scheduler"), daemon=True)
        assert line.startswith(f"database at {url} has no Sluice schema"), line
        assert line.endswith("run `sluice db migrate`")
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


def test_daemon_retrying_an_unreachable_database_says_one_line_per_attempt(tmp_path, redis_url):
    port = free_port()
    env = _env(f"postgresql://sluice:{SECRET}@127.0.0.1:{port}/sluice", redis_url, tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "scheduler"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    for line in lines:
        event = json.loads(line)
        assert (event["event"], event["url"]) == (
            "database_unavailable", f"postgresql://sluice:***@127.0.0.1:{port}/sluice"), line
