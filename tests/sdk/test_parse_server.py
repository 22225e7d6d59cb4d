"""The Task SDK runtime's parse server: its own failures are never a file's import error.

Real parse server (Airflow's DagBag), real PostgreSQL.
"""

from __future__ import annotations

import json
import textwrap
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
    parser = FolderParser(pool, folder, timeout_s=60, airflow=True)
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
