"""A parse pass under faults: a lost database is retried, DAG files see no credentials.

Real parse server (Airflow's DagBag), real PostgreSQL.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from scheduler import parsing
from scheduler.parsing import FolderParser
from shared.db import create_pool

pytestmark = pytest.mark.timeout(180)

DAG = """
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG("faulty", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    EmptyOperator(task_id="t")
"""

RECORDS_ENV = """
import json, os
from pathlib import Path
Path({out!r}).write_text(json.dumps(dict(os.environ)))
from airflow.sdk import dag
"""


@pytest.fixture
async def pool(db_url):
    pool = await create_pool(db_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def test_a_database_lost_while_storing_raises_bare_and_the_file_is_parsed_again(
        pool, db, tmp_path, monkeypatch):
    """The scheduler's parse loop catches a lost connection; inside the pass's task groups
    it must still come out as one (not an ExceptionGroup), and the file is retried."""
    (tmp_path / "faulty.py").write_text(textwrap.dedent(DAG))
    real_store = parsing.store_file
    calls = []

    async def store_file(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionResetError("database connection lost")
        return await real_store(*args, **kwargs)

    monkeypatch.setattr(parsing, "store_file", store_file)
    parser = FolderParser(pool, tmp_path, timeout_s=30)
    try:
        with pytest.raises(ConnectionResetError):
            await parser.parse_changed()
        assert await db.fetchval("SELECT count(*) FROM dag WHERE dag_id = 'faulty'") == 0
        assert await parser.parse_changed()  # not remembered as parsed: stored now
    finally:
        await parser.aclose()
    assert await db.fetchval("SELECT is_active FROM dag WHERE dag_id = 'faulty'")
    assert len(calls) == 2


async def test_dag_files_are_imported_without_sluice_credentials(pool, tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_DATABASE_URL", "postgresql://sluice:s3cret@127.0.0.1:1/sluice")
    monkeypatch.setenv("SLUICE_REDIS_URL", "redis://:s3cret@127.0.0.1:1/0")
    monkeypatch.setenv("PGPASSWORD", "s3cret")
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AIRFLOW_HOME")  # as the scheduler starts: Airflow's home is Sluice's
    out = tmp_path / "env.json"
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "records.py").write_text(RECORDS_ENV.format(out=str(out)))

    parser = FolderParser(pool, folder, timeout_s=30)
    try:
        await parser.parse_changed()
    finally:
        await parser.aclose()

    seen = json.loads(out.read_text())
    assert "s3cret" not in json.dumps(seen)
    assert not {"SLUICE_DATABASE_URL", "SLUICE_REDIS_URL", "PGPASSWORD"} & seen.keys()
    assert seen["AIRFLOW_HOME"] == str(tmp_path / "home" / "airflow")
