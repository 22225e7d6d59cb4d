"""`sluice dags test`: one run of a DAG in one process, with no daemon and no Redis.

Each test runs the command as a subprocess against the test's own database and DAGs
folder; what it asserts is what a user sees (exit code, terminal output) and what the
run left in PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg
import pytest

from shared.db import _init_connection
from shared.runview import run_document

pytestmark = pytest.mark.timeout(300)
RUN_S = 180.0  # Airflow's import and the parse on a loaded machine; each ends when done

DAGS = {
    "mapped.py": """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1), params={"factor": 2})
        def mapped():
            @task
            def numbers():
                print("NUMBERS PRINTED")
                return [1, 2, 3]

            @task
            def scale(x, params=None):
                return x * params["factor"]

            @task
            def total(values):
                import logging
                logging.getLogger("airflow.task").info("TOTAL LOGGED %s", sum(values))
                return sum(values)

            total(scale.expand(x=numbers()))
        mapped()
    """,
    "failing.py": """
        from datetime import datetime, timedelta
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def failing():
            @task(retries=1, retry_delay=timedelta(seconds=1))
            def boom():
                raise ValueError("kaboom from the task")

            @task
            def never():
                print("NEVER RUNS")

            boom() >> never()
        failing()
    """,
    "deferring.py": """
        from datetime import datetime, timedelta
        from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def deferring():
            wait = TimeDeltaSensor(task_id="wait", delta=timedelta(seconds=1), deferrable=True)

            @task
            def after():
                print("AFTER THE TRIGGER FIRED")
                return "done"

            wait >> after()
        deferring()
    """,
    "callbacks.py": """
        from datetime import datetime
        from airflow.sdk import dag, task

        def said(context):
            print("DAG CALLBACK SAYS", context["dag_run"].run_id)

        @dag(schedule=None, start_date=datetime(2026, 1, 1), on_success_callback=said)
        def with_callback():
            @task
            def one():
                return 1

            one()
        with_callback()
    """,
    "debugging.py": """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def debugging():
            @task
            def stop_here():
                answer = 41
                breakpoint()
                return answer

            stop_here()
        debugging()
    """,
}


@pytest.fixture
def folder(dags_folder: Path) -> Path:
    for name, source in DAGS.items():
        (dags_folder / name).write_text(textwrap.dedent(source))
    return dags_folder


def dags_test(db_url: str, folder: Path, home: Path, *args: str,
              stdin: str | None = None) -> subprocess.CompletedProcess:
    """``sluice dags test ARGS`` with only a database: no Redis URL, no daemon."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update({"SLUICE_DATABASE_URL": db_url, "SLUICE_DAGS_FOLDER": str(folder),
                "SLUICE_HOME": str(home),
                "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    return subprocess.run([sys.executable, "-m", "shared.cli", "dags", "test", *args], env=env,
                          input=stdin if stdin is not None else "", capture_output=True,
                          text=True, timeout=RUN_S)


async def only_run(db_url: str, dag_id: str) -> dict:
    conn = await asyncpg.connect(db_url)
    await _init_connection(conn)
    try:
        run_ids = [r["run_id"] for r in await conn.fetch(
            "SELECT run_id FROM dag_run WHERE dag_id = $1", dag_id)]
        assert len(run_ids) == 1, run_ids
        return (await run_document(conn, run_ids[0], dag_id))["doc"]
    finally:
        await conn.close()


def instances(doc: dict) -> dict[tuple[str, int], dict]:
    return {(t["task_id"], t["map_index"]): t for t in doc["tasks"]}


async def test_mapped_dag_succeeds_with_its_output_on_stdout(db_url, folder, tmp_path):
    out = dags_test(db_url, folder, tmp_path / "home", "mapped", "--conf", '{"factor": 10}')
    assert out.returncode == 0, out.stdout + out.stderr
    assert "NUMBERS PRINTED" in out.stdout  # a print, straight to the terminal
    assert "TOTAL LOGGED 60" in out.stdout  # a task log line, readable
    doc = await only_run(db_url, "mapped")
    assert doc["state"] == "success"
    tis = instances(doc)
    assert [tis[("scale", i)]["return_value"] for i in range(3)] == [10, 20, 30]
    assert tis[("total", -1)]["return_value"] == 60
    # the try's log file is written too, for `sluice tasks logs`
    logs = list((tmp_path / "home" / "logs").rglob("*"))
    assert any("TOTAL LOGGED 60" in p.read_text() for p in logs if p.is_file())


async def test_failing_dag_exits_1_after_its_retry(db_url, folder, tmp_path):
    out = dags_test(db_url, folder, tmp_path / "home", "failing")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "kaboom from the task" in out.stdout
    assert "NEVER RUNS" not in out.stdout
    doc = await only_run(db_url, "failing")
    tis = instances(doc)
    assert doc["state"] == "failed"
    assert (tis[("boom", -1)]["state"], tis[("boom", -1)]["try_number"]) == ("failed", 2)
    assert tis[("never", -1)]["state"] == "upstream_failed"


async def test_mark_success_pattern_skips_running_the_tasks_it_matches(db_url, folder, tmp_path):
    out = dags_test(db_url, folder, tmp_path / "home", "failing", "--mark-success-pattern", "bo+m")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kaboom" not in out.stdout
    assert "NEVER RUNS" in out.stdout
    tis = instances(await only_run(db_url, "failing"))
    assert (tis[("boom", -1)]["state"], tis[("never", -1)]["state"]) == ("success", "success")


async def test_deferred_task_resumes_after_its_trigger_runs_inline(db_url, folder, tmp_path):
    out = dags_test(db_url, folder, tmp_path / "home", "deferring")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "AFTER THE TRIGGER FIRED" in out.stdout
    tis = instances(await only_run(db_url, "deferring"))
    assert tis[("wait", -1)]["state"] == "success"
    assert tis[("wait", -1)]["try_number"] == 1  # one try across the deferral
    assert tis[("after", -1)]["return_value"] == "done"


async def test_breakpoint_reads_the_terminal(db_url, folder, tmp_path):
    out = dags_test(db_url, folder, tmp_path / "home", "debugging",
                    stdin="p answer + 1\nanswer = 99\nc\n")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "(Pdb) 42" in out.stdout  # pdb evaluated in the task's frame
    tis = instances(await only_run(db_url, "debugging"))
    assert tis[("stop_here", -1)]["return_value"] == 99  # and changed it


async def test_same_logical_date_replaces_the_run(db_url, folder, tmp_path):
    for _ in range(2):
        out = dags_test(db_url, folder, tmp_path / "home", "debugging", "--logical-date",
                        "2026-01-01", stdin="c\n")
        assert out.returncode == 0, out.stdout + out.stderr
    doc = await only_run(db_url, "debugging")
    assert doc["run_id"] == "manual__2026-01-01T00:00:00+00:00"


async def test_the_runs_dag_callback_runs_before_the_command_ends(db_url, folder, tmp_path):
    out = dags_test(db_url, folder, tmp_path / "home", "with_callback")
    assert out.returncode == 0, out.stdout + out.stderr
    doc = await only_run(db_url, "with_callback")
    assert f"DAG CALLBACK SAYS {doc['run_id']}" in out.stdout
    conn = await asyncpg.connect(db_url)
    try:  # nothing left owed for a scheduler started later
        assert await conn.fetchval("SELECT count(*) FROM callback_request") == 0
    finally:
        await conn.close()


def test_unknown_dag_is_one_line_and_exit_2(db_url, folder, tmp_path):
    out = dags_test(db_url, folder, tmp_path / "home", "no_such_dag")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == f"DAG 'no_such_dag' not found in {folder.resolve()}"
