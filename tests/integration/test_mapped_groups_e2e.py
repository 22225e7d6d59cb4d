"""Mapped task groups through the three real daemons."""

from __future__ import annotations

import pytest

from tests.cluster import Cluster, own_cluster, run_once

pytestmark = pytest.mark.timeout(240)
PARSE_TIMEOUT_S = 90.0
RUN_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
async def cluster(services, template_db, tmp_path_factory):
    """One scheduler, triggerer and worker for the module's tests; each writes its own DAG."""
    async with own_cluster(services, template_db, tmp_path_factory.mktemp("groups"),
                           name="groups") as c:
        c.start_all(SLUICE_WORKER_CONCURRENCY="8")
        yield c


async def run(cluster: Cluster, dag_id: str, timeout: float = RUN_TIMEOUT_S) -> dict:
    """Trigger ``dag_id`` once parsed and wait for its end: the finished run's document."""
    return (await run_once(cluster, dag_id, PARSE_TIMEOUT_S, timeout))[1]


def instances(doc: dict, task_id: str) -> list[tuple[int, str, object]]:
    """(map_index, state, return_value) of every instance of ``task_id``, by map index."""
    return [(t["map_index"], t["state"], t["return_value"])
            for t in doc["tasks"] if t["task_id"] == task_id]


async def test_group_over_upstream_list_chains_per_index_and_reduces(cluster: Cluster):
    markers = cluster.root / "markers"
    markers.mkdir()
    cluster.write_dag("g.py", f"""
        import time
        from datetime import datetime
        from pathlib import Path
        from airflow.sdk import dag, task, task_group

        MARKERS = Path({str(markers)!r})

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def g():
            @task
            def make():
                return [1, 2, 3]

            @task
            def double(x):
                if x == 3:  # depth-first: instance 0 finishes the whole group meanwhile
                    deadline = time.monotonic() + 30
                    while not (MARKERS / "describe-0").exists():
                        if time.monotonic() > deadline:
                            raise RuntimeError("instance 0 of describe never ran")
                        time.sleep(0.05)
                return x * 2

            @task
            def describe(doubled, x, label, ti=None):
                (MARKERS / f"describe-{{ti.map_index}}").touch()
                return f"{{label}}{{x}}->{{doubled}}"

            @task_group
            def each(x, label):
                return describe(double(x), x, label)

            @task
            def collect(lines):
                return {{"n": len(lines), "all": list(lines)}}

            collect(each.partial(label="n").expand(x=make()))
        g()
    """)
    doc = await run(cluster, "g")
    assert doc["state"] == "success"
    assert instances(doc, "each.double") == [(0, "success", 2), (1, "success", 4), (2, "success", 6)]
    assert instances(doc, "each.describe") == [
        (0, "success", "n1->2"), (1, "success", "n2->4"), (2, "success", "n3->6")]
    assert instances(doc, "collect") == [
        (-1, "success", {"n": 3, "all": ["n1->2", "n2->4", "n3->6"]})]


async def test_zero_length_skips_the_group_and_a_failed_producer_fails_it(cluster: Cluster):
    cluster.write_dag("z.py", """
        from datetime import datetime
        from airflow.sdk import dag, task, task_group

        def build(dag_id, produce):
            @dag(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1))
            def flow():
                @task
                def make():
                    return produce()

                @task
                def one(x):
                    return x

                @task
                def two(y):
                    return y

                @task_group
                def grp(x):
                    return two(one(x))

                @task
                def after(values):
                    return "not reached"

                @task(trigger_rule="all_done")
                def reduce(values):
                    return repr(values)

                out = grp.expand(x=make())
                after(out)
                reduce(out)
            return flow()

        def broken():
            raise RuntimeError("no input today")

        build("zero", lambda: [])
        build("broken", broken)
    """)
    zero = await run(cluster, "zero")
    broken = await run(cluster, "broken")
    states = {(t["task_id"], t["map_index"]): t["state"] for t in zero["tasks"]}
    assert states == {("make", -1): "success", ("grp.one", -1): "skipped",
                      ("grp.two", -1): "skipped", ("after", -1): "skipped",
                      ("reduce", -1): "success"}
    # what reaches it is the Task SDK's: a group task with no instance pushed nothing, and
    # the SDK resolves a reference to a task in a mapped group from all its XComs, None if none
    assert instances(zero, "reduce") == [(-1, "success", "None")]
    assert zero["state"] == "success"
    states = {(t["task_id"], t["map_index"]): t["state"] for t in broken["tasks"]}
    assert states == {("make", -1): "failed", ("grp.one", -1): "upstream_failed",
                      ("grp.two", -1): "upstream_failed", ("after", -1): "upstream_failed",
                      ("reduce", -1): "success"}
    assert instances(broken, "reduce") == [(-1, "success", "None")]
    assert broken["state"] == "failed"  # a leaf (after) is upstream_failed


async def test_trigger_rules_inside_the_group_are_per_index(cluster: Cluster):
    cluster.write_dag("r.py", """
        from datetime import datetime
        from airflow.sdk import dag, task, task_group

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def r():
            @task
            def numbers():
                return [0, 1, 2, 3]

            @task
            def divide(i):
                return 12 // i

            @task
            def report_success(i):
                return f"ok {i}"

            @task(trigger_rule="one_failed")
            def report_failure(i):
                return f"failed {i}"

            @task_group
            def tg(i):
                divide(i) >> [report_success(i), report_failure(i)]

            tg.expand(i=numbers())
        r()
    """)
    doc = await run(cluster, "r")
    assert instances(doc, "tg.divide") == [
        (0, "failed", None), (1, "success", 12), (2, "success", 6), (3, "success", 4)]
    assert instances(doc, "tg.report_failure") == [
        (0, "success", "failed 0"), (1, "skipped", None), (2, "skipped", None), (3, "skipped", None)]
    assert instances(doc, "tg.report_success") == [
        (0, "upstream_failed", None), (1, "success", "ok 1"), (2, "success", "ok 2"),
        (3, "success", "ok 3")]
    assert doc["state"] == "failed"


async def test_a_task_in_one_mapped_group_feeds_another_groups_expand(cluster: Cluster):
    cluster.write_dag("f.py", """
        from datetime import datetime
        from airflow.sdk import dag, task, task_group

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def f():
            @task
            def words():
                return ["a", "bb", "ccc"]

            @task
            def measure(word):
                return len(word)

            @task
            def keep_odd(n):
                return n if n % 2 else None  # None filters the element out

            @task_group
            def first(word):
                return keep_odd(measure(word))

            @task
            def square(n):
                return n * n

            @task
            def label(sq, n):
                return f"{n}^2={sq}"

            @task_group
            def second(n):
                return label(square(n), n)

            @task
            def total(values):
                return list(values)

            total(second.expand(n=first.expand(word=words())))
        f()
    """)
    doc = await run(cluster, "f")
    # The Task SDK decides what a task in a mapped group may return when another group
    # expands over it: a task of its own (not a mapped operator) with a mapped dependant must
    # push a list or dict, so every keep_odd instance fails, by Airflow's rule.
    assert instances(doc, "first.measure") == [(0, "success", 1), (1, "success", 2),
                                               (2, "success", 3)]
    assert [(i, s) for i, s, _ in instances(doc, "first.keep_odd")] == [
        (0, "failed"), (1, "failed"), (2, "failed")]
    conn = await cluster.connect()
    try:
        errors = {r["map_index"]: r["error"] for r in await conn.fetch(
            "SELECT map_index, error FROM task_instance WHERE task_id = 'first.keep_odd'")}
    finally:
        await conn.close()
    assert errors == {0: "UnmappableXComTypePushed: unmappable return type 'int'",
                      1: "XComForMappingNotPushed: did not push XCom for task mapping",
                      2: "UnmappableXComTypePushed: unmappable return type 'int'"}
    # what Sluice decides: the group expanding over them, and its reduce, are upstream_failed
    assert instances(doc, "second.square") == [(-1, "upstream_failed", None)]
    assert instances(doc, "second.label") == [(-1, "upstream_failed", None)]
    assert instances(doc, "total") == [(-1, "upstream_failed", None)]
    assert doc["state"] == "failed"


async def test_the_example_from_the_readme(cluster: Cluster):
    import shutil
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "dags" / "file_pipeline_groups.py"
    shutil.copy(example, cluster.dags_folder / example.name)
    doc = await run(cluster, "file_pipeline_groups")
    assert doc["state"] == "success"
    assert [(i, s, v["rows"], v["ok"]) for i, s, v in instances(doc, "per_file.check")] == [
        (0, "success", 90, False), (1, "success", 100, True), (2, "success", 110, True),
        (3, "success", 120, True)]
    assert instances(doc, "report") == [(-1, "success", {"files": 4, "ok": 3})]


async def test_literal_cross_product_and_expand_kwargs_with_labels(cluster: Cluster):
    cluster.write_dag("l.py", """
        from datetime import datetime
        from airflow.sdk import dag, task, task_group

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def l():
            @task(map_index_template="{{ task.op_kwargs['a'] }}-{{ task.op_kwargs['b'] }}")
            def pair(a, b):
                return f"{a}{b}"

            @task
            def shout(text):
                return text.upper()

            @task_group
            def cross(a, b):
                shout(pair(a=a, b=b))

            cross.expand(a=["x", "y"], b=[1, 2, 3])

            @task
            def greet(name, greeting):
                return f"{greeting}, {name}"

            @task_group
            def hello(name, greeting="hello"):
                greet(name, greeting)

            hello.expand_kwargs([{"name": "ada"}, {"name": "bob", "greeting": "hi"}])
        l()
    """)
    doc = await run(cluster, "l")
    pairs = [t for t in doc["tasks"] if t["task_id"] == "cross.pair"]
    assert [(t["map_index"], t["label"], t["return_value"]) for t in pairs] == [
        (0, "x-1", "x1"), (1, "x-2", "x2"), (2, "x-3", "x3"),
        (3, "y-1", "y1"), (4, "y-2", "y2"), (5, "y-3", "y3")]
    assert [v for _, _, v in instances(doc, "cross.shout")] == ["X1", "X2", "X3", "Y1", "Y2", "Y3"]
    # the group function's default does not reach its tasks: the Task SDK resolves
    # ``greeting`` from the instance's dict, which lacks it at index 0 (as in Airflow)
    assert instances(doc, "hello.greet") == [(0, "failed", None), (1, "success", "hi, bob")]
    conn = await cluster.connect()
    try:
        error = await conn.fetchval(
            "SELECT error FROM task_instance WHERE task_id = 'hello.greet' AND map_index = 0")
    finally:
        await conn.close()
    assert error == "KeyError: 'greeting'"
    assert doc["state"] == "failed"
