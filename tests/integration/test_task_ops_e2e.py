"""Per-task operations against real daemons: `tasks clear`, `tasks mark-success` /
`mark-failed`, `runs cancel` (Airflow's clear, "Mark as" and "mark run failed")."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cluster import Cluster, own_cluster, run_once, wait_for

pytestmark = pytest.mark.timeout(420)

PARSE_S = 120.0  # the daemons import Airflow as they start: generous on a loaded machine
RUN_S = 120.0

DAGS = {
    "chain.py": """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def chain():
            @task
            def a(ti=None):
                return ti.try_number

            @task
            def b(x, ti=None):
                return ti.try_number

            @task
            def c(x, ti=None):
                return ti.try_number

            c(b(a()))
        chain()
    """,
    "fanout.py": """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def fanout():
            @task
            def double(x):
                return 2 * x

            @task
            def total(values):
                return sum(values)

            total(double.expand(x=[1, 2, 3]))
        fanout()
    """,
    "scoped.py": """
        from datetime import datetime
        from airflow.sdk import dag, setup, task, teardown

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def scoped():
            @setup
            def create(ti=None):
                return ti.try_number

            @task
            def work(ti=None):
                return ti.try_number

            @teardown
            def delete(ti=None):
                return ti.try_number

            @task
            def report(ti=None):
                return ti.try_number

            s, d = create(), delete()
            s >> work() >> d
            s >> d
            d >> report()
        scoped()
    """,
    "marks.py": """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def marks():
            @task
            def boom():
                raise ValueError("boom")

            @task
            def after():
                return "ran"

            boom() >> after()
        marks()
    """,
    "sleepy.py": """
        import os, time
        from datetime import datetime, timedelta
        from pathlib import Path
        from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
        from airflow.sdk import BaseOperator, dag, task

        MARKERS = Path({markers!r})

        class Nap(BaseOperator):
            \"\"\"Its first try sleeps; on_kill leaves a mark (the worker's SIGTERM).\"\"\"

            def execute(self, context):
                ti = context["ti"]
                self.killed_mark = MARKERS / f"killed-{{ti.run_id}}-{{ti.try_number}}"
                (MARKERS / f"nap-{{ti.run_id}}-{{ti.try_number}}").write_text(str(os.getpid()))
                if ti.try_number == 1:
                    time.sleep(600)
                return ti.try_number

            def on_kill(self):
                self.killed_mark.write_text("on_kill")

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def sleepy():
            @task
            def after():
                return "after"

            parked = TimeDeltaSensor(task_id="parked", delta=timedelta(hours=1), deferrable=True)
            Nap(task_id="nap") >> after()
            parked
        sleepy()
    """,
}


@pytest.fixture(scope="module")
async def cluster(services, template_db, tmp_path_factory):
    """The three daemons on a database of the module's own; each test has its own DAG."""
    root = tmp_path_factory.mktemp("taskops")
    async with own_cluster(services, template_db, root, name="taskops",
                           own_airflow_home=False) as c:
        (root / "markers").mkdir()
        for file, source in DAGS.items():
            c.write_dag(file, source.format(markers=str(root / "markers")) if "{markers" in source
                        else source)
        c.start_all()
        yield c


def cli_json(cluster: Cluster, *args: str) -> dict:
    out = cluster.cli(*args, "--json", timeout=RUN_S)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def tries(doc: dict) -> dict[tuple[str, int], tuple[str, int]]:
    return {(t["task_id"], t["map_index"]): (t["state"], t["try_number"]) for t in doc["tasks"]}


async def history(cluster: Cluster, dag_id: str, run_id: str) -> list[tuple]:
    conn = await cluster.connect()
    try:
        rows = await conn.fetch(
            "SELECT h.task_id, h.map_index, h.try_number, h.state FROM task_instance_history h"
            " JOIN dag_run r ON r.id = h.run_pk WHERE r.dag_id = $1 AND r.run_id = $2"
            " ORDER BY 1, 2, 3", dag_id, run_id)
    finally:
        await conn.close()
    return [tuple(r) for r in rows]


async def test_clear_one_task_with_downstream(cluster: Cluster):
    run_id, doc = await run_once(cluster, "chain")
    assert doc["state"] == "success", doc
    done = cli_json(cluster, "tasks", "clear", "chain", run_id, "b", "--downstream")
    assert [(c["task_id"], c["state"]) for c in done["cleared"]] == [("b", "success"),
                                                                     ("c", "success")]
    doc = await cluster.wait_run(run_id, RUN_S)
    assert doc["state"] == "success"
    assert tries(doc) == {("a", -1): ("success", 1), ("b", -1): ("success", 2),
                          ("c", -1): ("success", 2)}
    assert cluster.by_task(doc)["c"]["return_value"] == 2
    # their first tries are kept
    assert await history(cluster, "chain", run_id) == [("b", -1, 1, "success"),
                                                       ("c", -1, 1, "success")]


async def test_clear_one_map_index_and_what_follows(cluster: Cluster):
    run_id, doc = await run_once(cluster, "fanout")
    assert cluster.by_task(doc)["total"]["return_value"] == 12
    cli_json(cluster, "tasks", "clear", "fanout", run_id, "double", "--map-index", "1",
             "--downstream")
    doc = await cluster.wait_run(run_id, RUN_S)
    assert doc["state"] == "success"
    assert tries(doc) == {("double", 0): ("success", 1), ("double", 1): ("success", 2),
                          ("double", 2): ("success", 1), ("total", -1): ("success", 2)}
    assert cluster.by_task(doc)["total"]["return_value"] == 12


async def test_clearing_a_task_takes_its_setup_and_teardown(cluster: Cluster):
    run_id, doc = await run_once(cluster, "scoped")
    assert doc["state"] == "success", doc
    done = cli_json(cluster, "tasks", "clear", "scoped", run_id, "work")
    assert sorted(c["task_id"] for c in done["cleared"]) == ["create", "delete", "work"]
    doc = await cluster.wait_run(run_id, RUN_S)
    assert tries(doc) == {("create", -1): ("success", 2), ("work", -1): ("success", 2),
                          ("delete", -1): ("success", 2), ("report", -1): ("success", 1)}


async def test_mark_success_then_failed_sets_the_run_state(cluster: Cluster):
    run_id, doc = await run_once(cluster, "marks")
    assert tries(doc) == {("boom", -1): ("failed", 1), ("after", -1): ("upstream_failed", 0)}
    done = cli_json(cluster, "tasks", "mark-success", "marks", run_id, "boom")
    assert [(m["task_id"], m["state"], m["new_state"]) for m in done["marked"]] == [
        ("boom", "failed", "success")]
    assert [c["task_id"] for c in done["cleared"]] == ["after"]  # failed downstream runs again
    doc = await cluster.wait_run(run_id, RUN_S)
    assert doc["state"] == "success", doc
    assert cluster.by_task(doc)["after"]["return_value"] == "ran"

    cli_json(cluster, "tasks", "mark-failed", "marks", run_id, "after")
    doc = await cluster.wait_run(run_id, RUN_S)
    assert doc["state"] == "failed"
    assert tries(doc) == {("boom", -1): ("success", 1), ("after", -1): ("failed", 1)}
    again = cluster.cli("tasks", "mark-failed", "marks", run_id, "after")
    assert again.returncode == 2
    assert again.stderr.strip() == f"task 'after' of run {run_id!r} of DAG 'marks' is already failed"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(
        f"/proc/{pid}/status").read_text().lower()


async def started_nap(cluster: Cluster, run_id: str, try_number: int) -> int:
    marker = cluster.root / "markers" / f"nap-{run_id}-{try_number}"

    async def written():
        return marker.exists() and marker.read_text()

    return int(await wait_for(written, RUN_S, f"nap's try {try_number} to start"))


async def test_clearing_a_running_try_stops_it_and_runs_a_new_one(cluster: Cluster):
    await cluster.wait_dag("sleepy", timeout=PARSE_S)
    run_id = await cluster.trigger("sleepy")
    pid = await started_nap(cluster, run_id, 1)
    cli_json(cluster, "tasks", "clear", "sleepy", run_id, "nap")
    await wait_for(lambda: _async(not pid_alive(pid)), 60, "the cleared try's process to die")
    assert (cluster.root / "markers" / f"killed-{run_id}-1").read_text() == "on_kill"
    await started_nap(cluster, run_id, 2)

    async def nap_done():
        return tries(await cluster.run_doc(run_id))[("nap", -1)] == ("success", 2)

    await wait_for(nap_done, RUN_S, "nap's second try to succeed")
    cli_json(cluster, "runs", "cancel", "sleepy", run_id)  # the parked sensor: not waited for
    doc = await cluster.wait_run(run_id, RUN_S)
    assert tries(doc)[("nap", -1)] == ("success", 2)
    assert ("nap", -1, 1, "failed") in await history(cluster, "sleepy", run_id)


async def test_cancel_stops_a_sleeping_try_and_a_deferred_one(cluster: Cluster):
    await cluster.wait_dag("sleepy", timeout=PARSE_S)
    run_id = await cluster.trigger("sleepy")
    pid = await started_nap(cluster, run_id, 1)

    async def parked():
        return tries(await cluster.run_doc(run_id))[("parked", -1)][0] == "deferred"

    await wait_for(parked, RUN_S, "the sensor to defer")
    done = cli_json(cluster, "runs", "cancel", "sleepy", run_id)
    assert done["run_state"] == "failed"
    assert {(c["task_id"], c["new_state"]) for c in done["changed"]} == {
        ("nap", "failed"), ("parked", "failed"), ("after", "skipped")}
    await wait_for(lambda: _async(not pid_alive(pid)), 60, "the cancelled try's process to die")
    assert (cluster.root / "markers" / f"killed-{run_id}-1").read_text() == "on_kill"
    doc = await cluster.run_doc(run_id)
    assert doc["state"] == "failed"
    assert tries(doc) == {("nap", -1): ("failed", 1), ("parked", -1): ("failed", 1),
                          ("after", -1): ("skipped", 0)}
    conn = await cluster.connect()
    try:
        assert await conn.fetchval(
            "SELECT count(*) FROM trigger t JOIN task_instance ti ON ti.id = t.ti_id"
            " JOIN dag_run r ON r.id = ti.run_pk WHERE r.run_id = $1", run_id) == 0
    finally:
        await conn.close()
    again = cluster.cli("runs", "cancel", "sleepy", run_id)
    assert again.returncode == 2
    assert again.stderr.strip() == f"run {run_id!r} of DAG 'sleepy' is already failed"


async def test_unknown_task_or_map_index_is_one_line(cluster: Cluster):
    run_id, _ = await run_once(cluster, "fanout")
    out = cluster.cli("tasks", "clear", "fanout", run_id, "nope")
    assert out.returncode == 2
    assert out.stderr.strip() == f"task 'nope' is not in DAG 'fanout' (run {run_id!r})"
    out = cluster.cli("tasks", "mark-success", "fanout", run_id, "double", "--map-index", "7")
    assert out.returncode == 2
    assert out.stderr.strip() == (f"task 'double' of run {run_id!r} of DAG 'fanout' has no map "
                                  "index 7 (its map indexes: 0..2)")
    done = cli_json(cluster, "tasks", "clear", "fanout", run_id, "double", "--only-failed")
    assert done["cleared"] == []  # none failed: the finished run is left as it is
    assert (await cluster.run_doc(run_id))["state"] == "success"
    out = cluster.cli("tasks", "clear", "fanout", "no_such_run", "double")
    assert out.returncode == 2
    assert out.stderr.strip() == "run 'no_such_run' of DAG 'fanout' not found"


async def _async(value):
    return value
