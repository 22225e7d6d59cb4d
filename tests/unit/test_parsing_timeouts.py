"""A slow DAG file holds back only the dag_ids it could define; its import error is Airflow's.

Real parsing children, real PostgreSQL.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from scheduler import parsing
from scheduler.parsing import FolderParser, parse_file
from shared.db import create_pool

pytestmark = pytest.mark.timeout(90)

DAG = """
from datetime import datetime
from shared.sdk import DAG, EmptyOperator

with DAG({dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    EmptyOperator(task_id={task_id!r})
"""

HANGS = """
import time
from shared.sdk import dag
time.sleep(3600)
"""

SWALLOWS = """
import time
from shared.sdk import dag
while True:
    try:
        time.sleep(3600)
    except Exception:
        pass
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
    await FolderParser(pool, folder, timeout_s=4).parse_changed()

    hangs = write(folder, "a_hangs.py", HANGS)
    write(folder, "b_known.py", DAG.format(dag_id="known", task_id="new"))
    write(folder, "c_new.py", DAG.format(dag_id="brand_new", task_id="t"))
    seen: list[tuple[bool, dict[str, str]]] = []

    async def announced():
        hang_error = await db.fetchval("SELECT count(*) FROM import_error WHERE fileloc = $1",
                                       str(hangs.resolve()))
        seen.append((bool(hang_error), await stored_tasks(db)))

    restarted = FolderParser(pool, folder, timeout_s=4, on_change=announced)
    assert await restarted.parse_changed()

    # announced before the hanging file's timeout was stored, however slow the machine
    assert seen[0] == (False, {"known": "new"})
    assert seen[-1] == (True, {"known": "new", "brand_new": "t"})  # after it, in folder order
    error = await db.fetchval("SELECT message FROM import_error WHERE fileloc = $1",
                              str(hangs.resolve()))
    assert error == (f"{hangs}:4: shared.sdk.exceptions.AirflowTaskTimeout: "
                     f"DagBag import timeout for {hangs} after 4.0s.")


async def test_a_file_that_swallows_the_timeout_is_killed(tmp_path, monkeypatch):
    monkeypatch.setattr(parsing, "KILL_AFTER_TIMEOUT_S", 1.0)
    path = write(tmp_path, "swallows.py", SWALLOWS)
    started = time.monotonic()

    result = await parse_file(path, tmp_path, timeout_s=1)

    assert time.monotonic() - started < 10
    assert result["dags"] == []
    assert result["error"] == (f"{path}: shared.sdk.exceptions.AirflowTaskTimeout: "
                               f"DagBag import timeout for {path} after 1.0s.")


async def test_a_huge_import_error_is_stored_capped(tmp_path):
    path = write(tmp_path, "huge.py", "from shared.sdk import dag\n"
                                      "raise RuntimeError('x' * 20_000_000)\n")
    result = await parse_file(path, tmp_path, timeout_s=30)
    assert len(result["error"]) <= 64 * 1024
    assert result["error"].startswith(f"{path}:2: RuntimeError: xxx")
    assert "[truncated 19.0 MB]" in result["error"]
