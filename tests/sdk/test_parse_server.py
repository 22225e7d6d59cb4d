"""The parse server: its own failures are never a file's import error.

Real parse server (Airflow's DagBag), real PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scheduler import parsing
from scheduler.parsing import FolderParser, ParseServer
from shared.db import create_pool

pytestmark = pytest.mark.timeout(180)

DAG = """
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
{before}
with DAG({dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    EmptyOperator(task_id="t")
"""

#: Kills the parse server (its parent) once, while a healthy file is being parsed.
KILLS_SERVER = """
import os, signal, time
from pathlib import Path
marker = Path({marker!r})
if marker.exists():
    marker.unlink()
    time.sleep(0.5)
    os.kill(os.getppid(), signal.SIGKILL)
"""


def write(folder: Path, name: str, dag_id: str, before: str = "") -> Path:
    path = folder / name
    path.write_text(DAG.format(dag_id=dag_id, before=textwrap.dedent(before)))
    return path


@pytest.fixture
async def pool(db_url):
    pool = await create_pool(db_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def test_files_parsed_when_the_server_died_are_parsed_again_without_an_error(
        pool, db, tmp_path):
    folder = tmp_path / "dags"
    folder.mkdir()
    marker = tmp_path / "kill-once"
    marker.touch()
    healthy = write(folder, "healthy.py", "healthy", before="import time\ntime.sleep(3)\n")
    write(folder, "killer.py", "killer", before=KILLS_SERVER.format(marker=str(marker)))
    parser = FolderParser(pool, folder, timeout_s=60)
    try:
        await parser.parse_changed()  # the server dies with both files in flight
        assert not marker.exists()
        assert await db.fetchval("SELECT count(*) FROM import_error WHERE fileloc = $1",
                                 str(healthy.resolve())) == 0
        await parser.parse_changed()  # a new server; the files were not remembered as parsed
    finally:
        await parser.aclose()
    rows = await db.fetch("SELECT dag_id FROM dag WHERE is_active ORDER BY dag_id")
    assert [r["dag_id"] for r in rows] == ["healthy", "killer"]
    assert await db.fetchval("SELECT count(*) FROM import_error") == 0


async def test_the_server_start_is_not_counted_in_a_files_time(tmp_path, monkeypatch):
    """A server slow to start (Airflow imported on a loaded host) times out no file."""
    monkeypatch.setattr(parsing, "KILL_AFTER_TIMEOUT_S", 0.0)  # a file's deadline: 1 + 0 + 5 s
    path = write(tmp_path, "quick.py", "quick")
    server = ParseServer(tmp_path)
    server.command = ["sh", "-c", 'sleep 7; exec "$@"', "sh", *server.command]
    try:
        result = await server.parse(path, timeout_s=1.0)
    finally:
        await server.stop()
    assert result["error"] is None, result["error"]
    assert [d["dag_id"] for d in result["dags"]] == ["quick"]


async def test_the_parse_server_gets_no_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_DATABASE_URL", "postgresql://sluice:s3cret@127.0.0.1:1/sluice")
    monkeypatch.setenv("PGPASSWORD", "s3cret")
    out = tmp_path / "env.json"
    path = write(tmp_path, "records.py", "records", before=(
        f"import json, os\nopen({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))\n"))
    server = ParseServer(tmp_path)
    try:
        result = await server.parse(path, timeout_s=30.0)
    finally:
        await server.stop()
    assert result["error"] is None, result["error"]
    seen = json.loads(out.read_text())
    assert "s3cret" not in json.dumps(seen) and "AIRFLOW_HOME" in seen


SWALLOWS_TIMEOUT = """
import time
while True:
    try:
        time.sleep(3600)
    except BaseException:
        pass
"""


async def test_a_file_that_swallows_airflows_timeout_is_killed_with_airflows_text(
        tmp_path, monkeypatch):
    monkeypatch.setattr(parsing, "KILL_AFTER_TIMEOUT_S", 1.0)  # sent with the request
    path = write(tmp_path, "swallows.py", "swallows", before=SWALLOWS_TIMEOUT)
    started = time.monotonic()
    result = await parsing.parse_file(path, tmp_path, timeout_s=1.0)
    assert time.monotonic() - started < 30  # the server's start (Airflow's import) included
    assert result["dags"] == [] and not result.get("server_failed")
    assert result["error"] == (f"{path}: airflow.sdk.exceptions.AirflowTaskTimeout: "
                               f"DagBag import timeout for {path} after 1.0s.")


def test_a_dag_id_owned_elsewhere_gets_airflows_duplicate_text():
    from airflow.exceptions import AirflowDagDuplicatedIdException

    exc = AirflowDagDuplicatedIdException("d", "/dags/b.py", "/dags/a.py")
    assert parsing.duplicate_message("d", "/dags/b.py", "/dags/a.py") == (
        f"{type(exc).__name__}: {exc}")


def test_the_scheduler_process_does_not_import_airflow():
    """Only its parse server does: the daemon stays lean and never runs user code."""
    code = ("import sys, scheduler.daemon, scheduler.parsing, scheduler.start_trigger; "
            "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"
