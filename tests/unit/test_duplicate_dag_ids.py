"""Two DAG files defining one dag_id: the file that had it keeps it (Airflow's DagBag).

The other file gets ``AirflowDagDuplicatedIdException`` as its import error,
and takes the dag_id over once the owner is deleted, renamed or stops
defining it. Real parse server (Airflow's DagBag), real PostgreSQL.
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from scheduler.parsing import FolderParser, ParseServer, store_result
from shared.db import create_pool

pytestmark = pytest.mark.timeout(180)

DAG_FILE = """
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

for dag_id in {dag_ids!r}:
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        EmptyOperator(task_id={task_id!r})
    globals()[dag_id] = dag
"""


def write(folder: Path, name: str, *dag_ids: str, task_id: str = "t") -> Path:
    path = folder / name
    existed = path.exists()
    path.write_text(textwrap.dedent(DAG_FILE.format(dag_ids=list(dag_ids), task_id=task_id)))
    if existed:  # a new mtime even within the file system's resolution
        later = time.time() + 5
        os.utime(path, (later, later))
    return path


def message(dag_id: str, incoming: Path, existing: Path) -> str:
    return (f"AirflowDagDuplicatedIdException: Ignoring DAG {dag_id} from {incoming.resolve()}"
            f" - also found in {existing.resolve()}")


@pytest.fixture
async def parser(tmp_path, db_url):
    pool = await create_pool(db_url, min_size=1, max_size=2)
    folder = tmp_path / "dags"
    folder.mkdir()
    parser = FolderParser(pool, folder, timeout_s=60)
    yield parser
    await parser.aclose()
    await pool.close()


async def state(db) -> tuple[dict[str, str], dict[str, str]]:
    """Active dag_id -> file name, and file name -> import error message."""
    dags = await db.fetch("SELECT dag_id, fileloc FROM dag WHERE is_active")
    errors = await db.fetch("SELECT fileloc, message FROM import_error")
    return ({r["dag_id"]: Path(r["fileloc"]).name for r in dags},
            {Path(r["fileloc"]).name: r["message"] for r in errors})


async def test_the_file_that_had_the_dag_id_keeps_it_and_the_other_is_refused(parser, db):
    first = write(parser.dags_folder, "b_first.py", "shared")
    await parser.parse_changed()
    second = write(parser.dags_folder, "a_second.py", "shared", "own")
    await parser.parse_changed()

    dags, errors = await state(db)
    assert dags == {"shared": "b_first.py", "own": "a_second.py"}
    assert errors == {"a_second.py": message("shared", second, first)}
    serialized = await db.fetchval("SELECT serialized FROM dag WHERE dag_id = 'shared'")
    assert serialized["fileloc"] == str(first.resolve())


async def test_new_files_in_one_pass_leave_the_dag_id_to_the_first_in_folder_order(parser, db):
    write(parser.dags_folder, "z.py", "shared")
    first = write(parser.dags_folder, "m.py", "shared")
    last = write(parser.dags_folder, "n.py", "shared")
    await parser.parse_changed()

    dags, errors = await state(db)
    assert dags == {"shared": "m.py"}
    assert errors == {"n.py": message("shared", last, first),
                      "z.py": message("shared", parser.dags_folder / "z.py", first)}


async def test_a_new_parser_keeps_the_same_owner(parser, db):
    write(parser.dags_folder, "b.py", "shared")
    await parser.parse_changed()
    write(parser.dags_folder, "a.py", "shared")
    await parser.parse_changed()
    before = await state(db)

    restarted = FolderParser(parser.pool, parser.dags_folder, timeout_s=60)
    try:
        await restarted.parse_changed()
    finally:
        await restarted.aclose()
    assert await state(db) == before
    assert before[0] == {"shared": "b.py"} and set(before[1]) == {"a.py"}


async def test_deleting_the_owner_hands_the_dag_id_over_in_one_pass(parser, db):
    owner = write(parser.dags_folder, "b.py", "shared")
    await parser.parse_changed()
    write(parser.dags_folder, "a.py", "shared")
    await parser.parse_changed()

    owner.unlink()
    assert await parser.parse_changed()
    assert await state(db) == ({"shared": "a.py"}, {})
    await parser.parse_changed()  # and it stays there
    assert await state(db) == ({"shared": "a.py"}, {})


async def test_an_owner_giving_the_dag_id_up_hands_it_over_in_the_same_pass(parser, db):
    owner = write(parser.dags_folder, "b.py", "shared", "kept")
    await parser.parse_changed()
    write(parser.dags_folder, "a.py", "shared")
    await parser.parse_changed()

    write(parser.dags_folder, "b.py", "kept")
    await parser.parse_changed()
    assert await state(db) == ({"shared": "a.py", "kept": "b.py"}, {})

    write(parser.dags_folder, "b.py", "kept", "shared")  # now b.py is the one refused
    await parser.parse_changed()
    dags, errors = await state(db)
    assert dags == {"shared": "a.py", "kept": "b.py"}
    assert errors == {"b.py": message("shared", owner, parser.dags_folder / "a.py")}


async def test_renaming_the_owner_lets_the_refused_file_compete_in_folder_order(parser, db):
    owner = write(parser.dags_folder, "b.py", "shared")
    await parser.parse_changed()
    refused = write(parser.dags_folder, "a.py", "shared")
    await parser.parse_changed()

    renamed = owner.rename(parser.dags_folder / "z.py")  # keeps its mtime
    await parser.parse_changed()
    dags, errors = await state(db)
    assert dags == {"shared": "a.py"}
    assert errors == {"z.py": message("shared", renamed, refused)}


async def test_a_file_renamed_back_with_its_old_mtime_is_parsed_again(parser, db):
    path = write(parser.dags_folder, "a.py", "only")
    await parser.parse_changed()
    moved = path.rename(parser.dags_folder / "elsewhere.txt")
    await parser.parse_changed()
    assert (await state(db))[0] == {}
    moved.rename(path)
    await parser.parse_changed()
    assert (await state(db))[0] == {"only": "a.py"}


async def test_store_result_without_the_folder_listing_checks_the_owner_exists(
        tmp_path, db_url, db):
    owner = write(tmp_path, "owner.py", "shared")
    other = write(tmp_path, "other.py", "shared")
    pool = await create_pool(db_url, min_size=1, max_size=1)
    server = ParseServer(tmp_path)
    try:
        assert await store_result(pool, await server.parse(owner, 60)) is True
        assert await store_result(pool, await server.parse(other, 60)) is False
        assert (await state(db))[1] == {"other.py": message("shared", other, owner)}
        owner.unlink()
        assert await store_result(pool, await server.parse(other, 60)) is True
    finally:
        await server.stop()
        await pool.close()
    assert await state(db) == ({"shared": "other.py"}, {})


def test_the_expected_message_is_airflows_text():
    from airflow.exceptions import AirflowDagDuplicatedIdException

    exc = AirflowDagDuplicatedIdException(dag_id="d", incoming="/x/b.py", existing="/x/a.py")
    assert message("d", Path("/x/b.py"), Path("/x/a.py")) == f"{type(exc).__name__}: {exc}"
