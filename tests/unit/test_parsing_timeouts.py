"""A slow DAG file holds back only the dag_ids it could define; its import error is Airflow's.

Real parse server (Airflow's DagBag, its ``dagbag_import_timeout``), real PostgreSQL.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from scheduler.parsing import FolderParser, parse_file
from shared.db import create_pool
from shared.textcap import MAX_ERROR_CHARS

pytestmark = pytest.mark.timeout(180)

DAG = """
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG({dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    EmptyOperator(task_id={task_id!r})
"""

HANGS = """
import time
from airflow.sdk import dag
time.sleep(3600)
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
async def pool(db_url):
    pool = await create_pool(db_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def stored_tasks(db) -> dict[str, str]:
    rows = await db.fetch("SELECT dag_id, serialized FROM dag WHERE is_active")
    return {r["dag_id"]: r["serialized"]["tasks"][0]["task_id"] for r in rows}


async def test_a_hanging_file_holds_back_only_unowned_dag_ids(pool, db, tmp_path):
    folder = tmp_path / "dags"
    folder.mkdir()
    write(folder, "b_known.py", DAG.format(dag_id="known", task_id="old"))
    first = FolderParser(pool, folder, timeout_s=4)
    try:
        await first.parse_changed()
    finally:
        await first.aclose()

    hangs = write(folder, "a_hangs.py", HANGS)
    write(folder, "b_known.py", DAG.format(dag_id="known", task_id="new"))
    write(folder, "c_new.py", DAG.format(dag_id="brand_new", task_id="t"))
    seen: list[tuple[bool, dict[str, str]]] = []

    async def announced():
        hang_error = await db.fetchval("SELECT count(*) FROM import_error WHERE fileloc = $1",
                                       str(hangs.resolve()))
        seen.append((bool(hang_error), await stored_tasks(db)))

    restarted = FolderParser(pool, folder, timeout_s=4, on_change=announced)
    try:
        assert await restarted.parse_changed()
    finally:
        await restarted.aclose()

    # announced before the hanging file's timeout was stored, however slow the machine
    assert seen[0] == (False, {"known": "new"})
    assert seen[-1] == (True, {"known": "new", "brand_new": "t"})  # after it, in folder order
    error = await db.fetchval("SELECT message FROM import_error WHERE fileloc = $1",
                              str(hangs.resolve()))
    # Airflow's dagbag_import_timeout, with the traceback of the line the file was on
    assert f'File "{hangs.resolve()}", line 4, in <module>\n    time.sleep(3600)' in error, error
    assert (f"airflow.sdk.exceptions.AirflowTaskTimeout: DagBag import timeout for "
            f"{hangs.resolve()} after 4.0s.") in error, error


async def test_a_huge_import_error_is_stored_capped(tmp_path):
    path = write(tmp_path, "huge.py", "from airflow.sdk import dag\n"
                                      "raise RuntimeError('x' * 20_000_000)\n")
    result = await parse_file(path, tmp_path, timeout_s=60)
    assert result["dags"] == [] and not result.get("server_failed")
    assert len(result["error"]) <= MAX_ERROR_CHARS
    assert "RuntimeError: xxx" in result["error"]
    assert "[truncated 19.0 MB]" in result["error"]
    assert result["error"].rstrip().endswith("x")  # the tail is kept too
