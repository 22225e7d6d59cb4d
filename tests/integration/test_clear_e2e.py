"""`sluice runs clear`: a finished run runs again, re-aligned with the DAG as it is now."""

from __future__ import annotations

import json

import pytest

from tests.cluster import Cluster, own_cluster, run_once, wait_for

pytestmark = pytest.mark.timeout(240)

#: Each daemon imports Airflow as it starts, and the scheduler parses with it: generous on a
#: loaded machine; every wait ends as soon as its condition holds.
PARSE_S = 120.0
RUN_S = 120.0


@pytest.fixture(scope="module")
async def cluster(services, template_db, tmp_path_factory):
    """The three daemons on a database of the module's own; each test has its own DAG."""
    async with own_cluster(services, template_db, tmp_path_factory.mktemp("clear"), name="clear",
                           own_airflow_home=False) as c:
        c.start_all()
        yield c


LITERAL_DAG = """
    from datetime import datetime
    from airflow.sdk import dag, task

    @dag(schedule=None, start_date=datetime(2026, 1, 1))
    def literal():
        @task
        def double(x):
            return 2 * x

        @task
        def total(values):
            return sum(values)

        total(double.expand(x={values!r}))
    literal()
"""


async def wait_parsed(cluster: Cluster, dag_id: str, check) -> None:
    """Until the scheduler stored a version of ``dag_id`` for which ``check(spec)`` holds."""
    async def parsed():
        conn = await cluster.connect()
        try:
            spec = await conn.fetchval("SELECT serialized FROM dag WHERE dag_id = $1", dag_id)
        finally:
            await conn.close()
        return spec is not None and check(spec)

    await wait_for(parsed, PARSE_S, f"the new version of {dag_id} to be parsed")


def literal_length(values: list[int]):
    def check(spec: dict) -> bool:
        task = next(t for t in spec["tasks"] if t["task_id"] == "double")
        return task["mapped"]["inputs"][0].get("length") == len(values)
    return check


def instances(doc: dict, task_id: str) -> list[tuple]:
    return [(t["map_index"], t["state"], t["return_value"])
            for t in doc["tasks"] if t["task_id"] == task_id]


def clear(cluster: Cluster, run_id: str, *args: str) -> dict:
    out = cluster.cli("runs", "clear", run_id, "--wait", "--json", *args, timeout=RUN_S)
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)


async def test_literal_list_shrinks_then_grows(cluster: Cluster):
    cluster.write_dag("literal.py", LITERAL_DAG.format(values=[1, 2, 3]))
    run_id, doc = await run_once(cluster, "literal")
    assert cluster.by_task(doc)["total"]["return_value"] == 12

    cluster.write_dag("literal.py", LITERAL_DAG.format(values=[1, 2]))
    await wait_parsed(cluster, "literal", literal_length([1, 2]))
    doc = clear(cluster, run_id)
    assert doc["state"] == "success", doc
    assert instances(doc, "double") == [(0, "success", 2), (1, "success", 4), (2, "removed", None)]
    assert cluster.by_task(doc)["total"]["return_value"] == 6
    # each cleared instance ran a second try; none of them lost its retries
    assert {t["try_number"] for t in doc["tasks"] if t["state"] == "success"} == {2}

    cluster.write_dag("literal.py", LITERAL_DAG.format(values=[1, 2, 3, 4]))
    await wait_parsed(cluster, "literal", literal_length([1, 2, 3, 4]))
    doc = clear(cluster, run_id)
    assert doc["state"] == "success", doc
    assert instances(doc, "double") == [(0, "success", 2), (1, "success", 4),
                                        (2, "success", 6), (3, "success", 8)]
    assert cluster.by_task(doc)["total"]["return_value"] == 20
    tries = {t["map_index"]: t["try_number"] for t in doc["tasks"] if t["task_id"] == "double"}
    # index 2 sat out the second pass as removed: its try count goes on from there
    assert tries == {0: 3, 1: 3, 2: 2, 3: 1}


async def test_upstream_driven_mapping_expands_again_from_the_new_output(cluster: Cluster, tmp_path):
    source = tmp_path / "items.json"
    source.write_text(json.dumps(["a", "b", "c"]))
    cluster.write_dag("discovered.py", f"""
        import json
        from datetime import datetime
        from pathlib import Path
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def discovered():
            @task
            def discover():
                return json.loads(Path({str(source)!r}).read_text())

            @task
            def shout(item):
                return item.upper()

            @task
            def joined(values):
                return "".join(values)

            joined(shout.expand(item=discover()))
        discovered()
    """)
    run_id, doc = await run_once(cluster, "discovered")
    assert cluster.by_task(doc)["joined"]["return_value"] == "ABC"

    source.write_text(json.dumps(["x", "y"]))
    doc = clear(cluster, run_id)
    assert doc["state"] == "success", doc
    assert instances(doc, "shout") == [(0, "success", "X"), (1, "success", "Y")]
    assert cluster.by_task(doc)["joined"]["return_value"] == "XY"


async def test_only_failed_reruns_the_failed_part_with_fresh_retries(cluster: Cluster, tmp_path):
    gate = tmp_path / "may_succeed"
    cluster.write_dag("flaky.py", f"""
        from datetime import datetime
        from pathlib import Path
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def flaky():
            @task
            def fine():
                return "fine"

            @task(retries=1, retry_delay=0)
            def gated(x):
                if x == 2 and not Path({str(gate)!r}).exists():
                    raise RuntimeError("not yet")
                return x

            @task
            def after(values):
                return list(values)

            fine()
            after(gated.expand(x=[1, 2]))
        flaky()
    """)
    run_id, doc = await run_once(cluster, "flaky")
    assert doc["state"] == "failed"
    assert instances(doc, "gated") == [(0, "success", 1), (1, "failed", None)]
    assert cluster.by_task(doc)["after"]["state"] == "upstream_failed"

    gate.touch()
    doc = clear(cluster, run_id, "--only-failed")
    assert doc["state"] == "success", doc
    tries = {(t["task_id"], t["map_index"]): (t["state"], t["try_number"]) for t in doc["tasks"]}
    assert tries == {("fine", -1): ("success", 1), ("gated", 0): ("success", 1),
                     ("gated", 1): ("success", 3), ("after", -1): ("success", 1)}
    assert cluster.by_task(doc)["after"]["return_value"] == [1, 2]


async def test_active_or_unknown_runs_are_refused(cluster: Cluster, tmp_path):
    gate = tmp_path / "gate"
    cluster.write_dag("gated.py", f"""
        import time
        from datetime import datetime
        from pathlib import Path
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def gated():
            @task
            def wait_for_gate():
                while not Path({str(gate)!r}).exists():
                    time.sleep(0.05)
            wait_for_gate()
        gated()
    """)
    out = cluster.cli("runs", "clear", "no-such-run")
    assert (out.returncode, out.stderr.strip()) == (2, "run 'no-such-run' not found")
    await cluster.wait_dag("gated", timeout=PARSE_S)
    run_id = await cluster.trigger("gated")

    async def running():
        return (await cluster.run_doc(run_id))["tasks"][0]["state"] == "running"

    await wait_for(running, RUN_S, "the task to run")
    out = cluster.cli("runs", "clear", run_id)
    assert out.returncode == 2
    assert "of DAG 'gated' is running: only a finished run can be cleared" in out.stderr
    gate.touch()
    assert (await cluster.wait_run(run_id, RUN_S))["state"] == "success"
