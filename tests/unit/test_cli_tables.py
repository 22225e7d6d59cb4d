"""The tables of ``sluice`` as people read them: nothing that may be copied is cut.

The commands run as real processes against a fresh database. The DAG is stored,
and its run and task instances created, by Sluice's own code (``upsert_dag``,
``create_manual_run``, ``task_instance_rows``); only the instances' outcomes are
set by hand. Piped output is plain lines (parsed here by the header's column
offsets); a terminal gets rich tables, run here under a pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from datetime import datetime

import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, TaskGroup, task

from scheduler.runs import create_manual_run, insert_task_instances, task_instance_rows
from shared.airflow_spec import dag_spec
from shared.db import q
from shared.runview import graph_order
from shared.serialization import DagSpec

pytestmark = pytest.mark.timeout(90)

MAPPED = 1000
FAILED = {17: "ValueError: row 17 " + "is not a number " * 12 + "END17",
          503: "ValueError: row 503 " + "has no owner " * 12 + "END503"}
REPORT_ERROR = ("RuntimeError: the report could not be written " + "because the disk is full " * 5
                + "END-LINE-1\n  while writing /var/reports/" + "deep/" * 20 + "END-LINE-2")
LONG_FILELOC = "/srv/airflow/dags/" + "team_with_a_long_name/" * 5 + "tables.py"


def build_dag() -> DAG:
    """Created out of alphabetical order: graph order is not the order of the names."""
    with DAG("tables_with_a_long_dag_id", schedule=None,
             start_date=datetime(2026, 1, 1)) as dag:
        extract = EmptyOperator(task_id="zeta_extract")
        with TaskGroup("mid"):
            transform = EmptyOperator(task_id="b_transform")

        @task
        def load(x):
            return x

        loaded = load.expand(x=list(range(MAPPED)))
        report = EmptyOperator(task_id="alpha_report")
        extract >> transform >> loaded >> report
    return dag


GRAPH_ORDER = ["zeta_extract", "mid.b_transform", "load", "alpha_report"]


async def store_run(db, dag: DAG, fileloc: str = "tables.py") -> tuple[str, str]:
    """The DAG stored and a run of it with every instance, as the scheduler makes them."""
    serialized = dag_spec(dag)
    await db.execute(q("upsert_dag"), dag.dag_id, fileloc, "h", serialized, False)
    run_pk, run_id = await create_manual_run(db, dag.dag_id, {})
    await insert_task_instances(db, run_pk, task_instance_rows(DagSpec.model_validate(serialized)))
    return run_pk, run_id


async def finish(db, run_pk: int) -> None:
    """load: 997 succeed, [17] and [503] fail, [999] runs; alpha_report fails."""
    await db.execute("UPDATE task_instance SET state = 'success', try_number = 1 WHERE run_pk = $1",
                     run_pk)
    await db.execute("UPDATE task_instance SET state = 'running' WHERE run_pk = $1"
                     " AND task_id = 'load' AND map_index = $2", run_pk, MAPPED - 1)
    for index, error in FAILED.items():
        await db.execute("UPDATE task_instance SET state = 'failed', error = $3 WHERE run_pk = $1"
                         " AND task_id = 'load' AND map_index = $2", run_pk, index, error)
    await db.execute("UPDATE task_instance SET state = 'failed', error = $2 WHERE run_pk = $1"
                     " AND task_id = 'alpha_report'", run_pk, REPORT_ERROR)
    await db.execute(q("put_xcoms"), run_pk, "zeta_extract", -1, ["return_value"],
                     [json.dumps({"rows": list(range(40))})])


@pytest.fixture
async def run(db):
    run_pk, run_id = await store_run(db, build_dag(), LONG_FILELOC)
    await finish(db, run_pk)
    return run_id


@pytest.fixture
def sluice(db_url, redis_url, tmp_path):
    """``sluice ARGS…`` as a process, its stdout a pipe (or a terminal with ``tty``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(SLUICE_DATABASE_URL=db_url, SLUICE_REDIS_URL=redis_url, SLUICE_HOME=str(tmp_path / "home"), COLUMNS="80")

    def run(*args: str, tty: bool = False) -> str:
        command = [sys.executable, "-m", "shared.cli", *args]
        if tty:
            return _on_terminal(command, env)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout
    return run


def _on_terminal(command: list[str], env: dict[str, str]) -> str:
    """stdout of ``command`` run with a pseudo-terminal as its stdout, colours removed."""
    leader, follower = pty.openpty()
    with subprocess.Popen(command, env=env, stdout=follower, stderr=subprocess.PIPE) as proc:
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    os.close(leader)
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def plain_rows(printed: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the plain table whose header line starts with ``first_header``, by the
    header's column offsets (cells here fit their columns); a line that starts further
    right continues the cell of that column in the row above."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header + " "))
    header = [(m.start(), m.group()) for m in re.finditer(r"\S+", lines[start])]
    rows: list[dict[str, str]] = []
    for line in lines[start + 1:]:
        if not line.strip() or line.startswith("import error "):
            break
        indent = len(line) - len(line.lstrip())
        if indent:
            name = [n for offset, n in header if offset <= indent][-1]
            rows[-1][name] += "\n" + line.strip()
            continue
        ends = [offset for offset, _ in header[1:]] + [None]
        rows.append({n: line[o:e].strip() for (o, n), e in zip(header, ends, strict=True)})
    return rows


# --- runs list ---------------------------------------------------------------------------------
async def test_runs_list_prints_whole_run_ids(sluice, run):
    rows = plain_rows(sluice("runs", "list"), "dag_id")
    assert [r["run_id"] for r in rows] == [run]
    assert rows[0]["dag_id"] == build_dag().dag_id
    assert rows[0]["state"] == "queued" and rows[0]["end_date"] == "-"
    assert [r["run_id"] for r in json.loads(sluice("runs", "list", "--json"))] == [run]


async def test_on_a_terminal_a_run_id_stays_on_one_line(sluice, run):
    printed = sluice("runs", "list", tty=True)
    assert re.search(rf"(^|\s){re.escape(run)}(\s|$)", printed, re.M), printed
    assert "…" not in printed


# --- runs show ---------------------------------------------------------------------------------
async def test_runs_show_lists_tasks_in_graph_order_with_mapped_summaries(sluice, run):
    printed = sluice("runs", "show", run)
    rows = plain_rows(printed, "task")
    assert [r["task"] for r in rows] == [
        "zeta_extract", "mid.b_transform", f"load [0..{MAPPED - 1}]", "alpha_report"]
    load = rows[2]
    assert load["state"] == "success 997, failed 2, running 1"
    assert load["detail"].splitlines() == [
        f"[17] {FAILED[17]}", "1 more with errors (--all lists every instance)"]
    assert rows[3]["detail"] == REPORT_ERROR.replace("\n  ", "\n")  # each line whole
    value = json.dumps({"rows": list(range(40))})  # longer than its column: the row goes right
    assert any(line.startswith("zeta_extract ") and value in line for line in printed.splitlines())
    assert "counts: failed=3, running=1, success=999" in printed

    doc = json.loads(sluice("runs", "show", run, "--json"))  # DESIGN.md's shape and order
    assert set(doc) == {"dag_id", "run_id", "state", "start_date", "end_date", "tasks"}
    assert all(set(t) == {"task_id", "map_index", "label", "state", "try_number",
                          "return_value", "start_date", "end_date"} for t in doc["tasks"])
    keys = [(t["task_id"], t["map_index"]) for t in doc["tasks"]]
    assert keys == sorted(keys) and len(keys) == MAPPED + 3


async def test_runs_show_all_lists_every_instance(sluice, run):
    rows = plain_rows(sluice("runs", "show", run, "--all"), "task")
    assert [r["task"] for r in rows] == ["zeta_extract", "mid.b_transform",
                                         *(f"load [{i}]" for i in range(MAPPED)), "alpha_report"]
    by_task = {r["task"]: r for r in rows}
    for index, error in FAILED.items():
        assert (by_task[f"load [{index}]"]["state"], by_task[f"load [{index}]"]["detail"]) == \
            ("failed", error)
    assert by_task[f"load [{MAPPED - 1}]"]["state"] == "running"
    assert by_task["load [5]"]["label"] == "5"


async def test_on_a_terminal_errors_wrap_whole(sluice, run):
    printed = sluice("runs", "show", run, tty=True)
    assert "…" not in printed
    assert re.search(rf"^load \[0\.\.{MAPPED - 1}\] ", printed, re.M), printed
    assert len(printed.splitlines()) < 150  # one summary row, not a thousand
    every = sluice("runs", "show", run, "--all", tty=True)
    squashed = "".join(every.split())  # a cell's wrapped lines follow its row's first line
    for error in (FAILED[17], FAILED[503], REPORT_ERROR):
        assert "".join(error.split()) in squashed, error
    assert "…" not in every


# --- dags list, variables list -----------------------------------------------------------------
async def test_dags_list_prints_whole_ids_paths_and_import_errors(sluice, db, run):
    message = "Traceback (most recent call last):\n" + "  File " + LONG_FILELOC + "\n" + \
        "SyntaxError: invalid syntax " + "[bold]not markup[/bold] " * 4 + "END"
    await db.execute(q("set_import_error"), LONG_FILELOC + ".broken", message)
    printed = sluice("dags", "list")
    rows = plain_rows(printed, "dag_id")
    assert [(r["dag_id"], r["fileloc"]) for r in rows] == [(build_dag().dag_id, LONG_FILELOC)]
    assert f"import error {LONG_FILELOC}.broken:\n" + \
        "\n".join("  " + line for line in message.splitlines()) in printed


async def test_variables_list_prints_whole_values_when_piped(sluice):
    value = "postgres://reader@warehouse.internal:5432/" + "analytics_" * 30 + "END"
    sluice("variables", "set", "dsn", value)
    rows = plain_rows(sluice("variables", "list", "--show-values"), "key")
    assert rows == [{"key": "dsn", "val": value}]


# --- graph order, as Airflow's grid --------------------------------------------------------------
def structure(*tasks: tuple) -> list[dict]:
    return [{"task_id": t, "upstream": list(up), "group_id": g} for t, up, g in tasks]


def test_graph_order_follows_edges_then_creation():
    # created x, y, z; y >> x: Airflow's first pass takes y and z, the second x
    tasks = structure(("x", ["y"], None), ("y", [], None), ("z", [], None))
    assert graph_order(tasks, {"x", "y", "z"}) == ["y", "z", "x"]


def test_graph_order_keeps_groups_together_and_orders_inside_them():
    tasks = structure(("end", ["g.inner.b"], None), ("g.a", ["start"], "g"),
                      ("g.inner.b", ["g.inner.c"], "g.inner"), ("g.inner.c", ["g.a"], "g.inner"),
                      ("start", [], None), ("lone", [], None))
    assert graph_order(tasks, {t["task_id"] for t in tasks}) == \
        ["start", "lone", "g.a", "g.inner.c", "g.inner.b", "end"]


def test_graph_order_puts_tasks_the_dag_lost_last():
    tasks = structure(("b", [], None), ("a", ["b"], None))
    assert graph_order(tasks, {"a", "b", "gone", "also_gone"}) == ["b", "a", "also_gone", "gone"]
    assert graph_order([], {"b", "a"}) == ["a", "b"]


async def test_a_run_document_carries_the_graph_order(db):
    from shared.runview import run_document

    _, run_id = await store_run(db, build_dag())
    assert (await run_document(db, run_id))["order"] == GRAPH_ORDER
    assert sorted(GRAPH_ORDER) != GRAPH_ORDER


# --- with real daemons ---------------------------------------------------------------------------
async def test_a_real_mapped_run_reads_whole(cluster):
    """Errors as a worker stores them, a mapped task as the scheduler expands it."""
    cluster.write_dag("crunch.py", '''
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def crunch():
            @task
            def sizes():
                return list(range(12))
            @task
            def parse(n):
                if n in (4, 9):
                    raise ValueError(f"row {n}: " + "the value is not a number, " * 6 + f"END{n}")
                return n
            @task
            def aaa_total(values):
                return sum(values)
            aaa_total(parse.expand(n=sizes()))
        crunch()
    ''')
    cluster.start_all()
    run_id = await cluster.trigger("crunch")
    assert (await cluster.wait_run(run_id))["state"] == "failed"
    listed = cluster.cli("runs", "list")
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in plain_rows(listed.stdout, "dag_id")] == [run_id]
    shown = cluster.cli("runs", "show", "crunch", run_id)
    assert shown.returncode == 0, shown.stderr
    rows = plain_rows(shown.stdout, "task")
    assert [(r["task"], r["state"]) for r in rows] == [
        ("sizes", "success"), ("parse [0..11]", "success 10, failed 2"),
        ("aaa_total", "upstream_failed")]
    first = "ValueError: row 4: " + "the value is not a number, " * 6 + "END4"
    assert rows[1]["detail"].splitlines() == [
        f"[4] {first}", "1 more with errors (--all lists every instance)"]
    every = plain_rows(cluster.cli("runs", "show", "crunch", run_id, "--all").stdout, "task")
    assert [r["task"] for r in every] == ["sizes", *(f"parse [{i}]" for i in range(12)),
                                          "aaa_total"]
    assert every[1 + 9]["detail"] == "ValueError: row 9: " + "the value is not a number, " * 6 + "END9"
