"""What the scheduler keeps of a DAG file: dates as UTC instants, and a file whose DAG is
refused keeps that DAG's last good version while its other DAGs move on.

Airflow's DagBag decides what a file defines and how a broken one is worded (a
cycle, a bad dag_id, a syntax error); Sluice decides what is stored.
"""

from __future__ import annotations

import os
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pendulum
import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

from scheduler.parsing import FolderParser
from shared.airflow_spec import dag_spec
from shared.db import create_pool
from tests.unit.conftest import spec_of

pytestmark = pytest.mark.timeout(180)


# --- dates ---------------------------------------------------------------------------

def test_zoned_naive_and_default_args_start_dates_are_stored_as_utc_instants():
    with DAG("in_paris", schedule="0 6 * * *",
             start_date=pendulum.datetime(2021, 1, 1, tz="Europe/Paris"),
             end_date=pendulum.datetime(2030, 6, 1, 12, tz="Europe/Paris")) as paris:
        EmptyOperator(task_id="t")
    stored = dag_spec(paris)
    assert (stored["start_date"], stored["end_date"]) == \
        ("2020-12-31T23:00:00+00:00", "2030-06-01T10:00:00+00:00")
    assert stored["schedule"]["timetable"]["__var"]["timezone"] == "Europe/Paris"
    assert stored["schedule"]["earliest"] == "2020-12-31T23:00:00+00:00"
    assert spec_of(paris).start_date == pendulum.datetime(2021, 1, 1, tz="Europe/Paris")

    with DAG("naive", schedule=None, start_date=datetime(2026, 1, 1, 5)) as naive:
        EmptyOperator(task_id="t")
    assert dag_spec(naive)["start_date"] == "2026-01-01T05:00:00+00:00"
    with DAG("from_args", schedule=None, default_args={
            "start_date": pendulum.datetime(2026, 1, 1, 1, tz="Europe/Paris")}) as from_args:
        EmptyOperator(task_id="t")
    assert dag_spec(from_args)["start_date"] == "2026-01-01T00:00:00+00:00"


# --- a refused DAG -------------------------------------------------------------------

FILE = """
from datetime import datetime
from airflow.sdk import DAG, CronPartitionTimetable
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG("steady", schedule=None, start_date=datetime(2026, 1, 1)):
    EmptyOperator(task_id={steady_task!r})

with DAG("shifting", schedule=None, start_date=datetime(2026, 1, 1)):
    a, b = EmptyOperator(task_id="a"), EmptyOperator(task_id="b")
    a >> b {closing}

with DAG("timed", schedule={schedule}, start_date=datetime(2026, 1, 1), max_active_runs=1):
    EmptyOperator(task_id="t")
"""


def write(path: Path, **values) -> None:
    existed = path.exists()
    path.write_text(textwrap.dedent(FILE.format(**values)))
    if existed:  # a new mtime even within the file system's resolution
        later = time.time() + 5
        os.utime(path, (later, later))


async def stored(db) -> tuple[dict[str, dict], str | None]:
    """Active dag_id -> its stored spec, and the file's import error."""
    rows = await db.fetch("SELECT dag_id, serialized FROM dag WHERE is_active")
    error = await db.fetchval("SELECT message FROM import_error")
    return {r["dag_id"]: r["serialized"] for r in rows}, error


def task_ids(spec: dict) -> list[str]:
    return [t["task_id"] for t in spec["tasks"]]


async def test_a_refused_dag_keeps_its_last_good_version_and_the_files_others_move_on(
        db, db_url, tmp_path):
    folder = tmp_path / "dags"
    folder.mkdir()
    path = folder / "three.py"
    pool = await create_pool(db_url, min_size=1, max_size=4)
    parser = FolderParser(pool, folder, timeout_s=60)
    try:
        write(path, steady_task="old", closing="", schedule="'@daily'")
        await parser.parse_changed()
        dags, error = await stored(db)
        assert (sorted(dags), error) == (["shifting", "steady", "timed"], None)
        good_shifting, good_timed = dags["shifting"], dags["timed"]

        # Airflow refuses a cycle, Sluice a schedule it cannot run: one line each
        write(path, steady_task="new", closing=">> a",
              schedule="CronPartitionTimetable('0 0 * * *', timezone='UTC')")
        assert await parser.parse_changed()
        dags, error = await stored(db)
        assert task_ids(dags["steady"]) == ["new"]
        assert (dags["shifting"], dags["timed"]) == (good_shifting, good_timed)
        cycle, refused = error.splitlines()
        assert cycle == "AirflowDagCycleException: Cycle detected in Dag: shifting. Faulty task: b"
        assert refused == (f"{path.resolve()}: DAG 'timed': schedule CronPartitionTimetable "
                           "is not supported by Sluice (partitioned runs)"), refused

        write(path, steady_task="new", closing=">> EmptyOperator(task_id='c')",
              schedule="'@hourly'")
        assert await parser.parse_changed()
        dags, error = await stored(db)
        assert error is None
        assert task_ids(dags["shifting"]) == ["a", "b", "c"]
        assert dags["timed"]["schedule"]["summary"] == "0 * * * *"
    finally:
        await parser.aclose()
        await pool.close()
