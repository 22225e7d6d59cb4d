"""Dynamic task mapping through the three real daemons."""

from __future__ import annotations

import pytest

from tests.cluster import Cluster, own_cluster, run_once

pytestmark = pytest.mark.timeout(240)
PARSE_TIMEOUT_S = 90.0
RUN_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
async def cluster(services, template_db, tmp_path_factory):
    """One scheduler, triggerer and worker for the module's tests; each writes its own DAG."""
    async with own_cluster(services, template_db, tmp_path_factory.mktemp("mapping"),
                           name="mapping") as c:
        c.start_all(SLUICE_WORKER_CONCURRENCY="8")
        yield c


async def run(cluster: Cluster, dag_id: str, timeout: float = RUN_TIMEOUT_S) -> dict:
    """Trigger ``dag_id`` once parsed and wait for its end: the finished run's document."""
    return (await run_once(cluster, dag_id, PARSE_TIMEOUT_S, timeout))[1]


def instances(doc: dict, task_id: str) -> list[dict]:
    return [t for t in doc["tasks"] if t["task_id"] == task_id]


async def test_expand_over_upstream_mapped_over_mapped_and_reduce(cluster: Cluster):
    cluster.write_dag("m.py", """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def m():
            @task
            def make():
                return ["a", "b", "c"]
            @task(map_index_template="{{ task.op_kwargs['letter'] }}")
            def upper(letter):
                return None if letter == "b" else letter.upper()
            @task
            def twice(word):
                return word * 2
            @task
            def collect(words):
                return {"n": len(words), "all": list(words), "last": words[-1], "slice": words[0:1]}
            upper_out = upper.expand(letter=make())
            collect(twice.expand(word=upper_out))
        m()
    """)
    doc = await run(cluster, "m")
    assert doc["state"] == "success"
    up = instances(doc, "upper")
    assert [(t["map_index"], t["label"], t["return_value"]) for t in up] == [
        (0, "a", "A"), (1, "b", None), (2, "c", "C")]
    assert [t["return_value"] for t in instances(doc, "twice")] == ["AA", "CC"]
    assert instances(doc, "collect")[0]["return_value"] == {
        "n": 2, "all": ["AA", "CC"], "last": "CC", "slice": ["AA"]}


async def test_an_all_done_consumer_maps_over_the_values_a_partly_failed_mapped_task_left(
        cluster: Cluster):
    cluster.write_dag("partly.py", """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def partly():
            @task
            def fetch(n):
                if n == 2:
                    raise ValueError("source 2 is down")
                return n * 10
            @task(trigger_rule="all_done")
            def report(value):
                return f"got {value}"
            @task
            def strict(value):
                return value
            fetched = fetch.expand(n=[1, 2, 3])
            report.expand(value=fetched)
            strict.expand(value=fetched)
        partly()
    """)
    doc = await run(cluster, "partly")
    assert doc["state"] == "failed"
    assert [(t["map_index"], t["state"]) for t in instances(doc, "fetch")] == [
        (0, "success"), (1, "failed"), (2, "success")]
    assert [(t["map_index"], t["state"], t["return_value"]) for t in instances(doc, "report")] == [
        (0, "success", "got 10"), (1, "success", "got 30")]
    assert [(t["map_index"], t["state"]) for t in instances(doc, "strict")] == [
        (-1, "upstream_failed")]


async def test_zero_length_skips_and_run_succeeds(cluster: Cluster):
    cluster.write_dag("z.py", """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def z():
            @task
            def nothing():
                return []
            @task
            def each(x):
                return x
            @task
            def after(xs):
                return "not reached"
            @task(trigger_rule="all_done")
            def reduce(xs):
                return len(xs)
            out = each.expand(x=nothing())
            after(out)
            reduce(out)
        z()
    """)
    doc = await run(cluster, "z")
    states = {(t["task_id"], t["map_index"]): t["state"] for t in doc["tasks"]}
    assert states == {("nothing", -1): "success", ("each", -1): "skipped",
                      ("after", -1): "skipped", ("reduce", -1): "success"}
    assert instances(doc, "reduce")[0]["return_value"] == 0
    assert doc["state"] == "success"


async def test_expand_kwargs_from_upstream_cross_product_and_classic_operator(cluster: Cluster):
    cluster.write_dag("k.py", """
        from datetime import datetime
        from airflow.providers.standard.operators.bash import BashOperator
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def k():
            @task
            def configs():
                return [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
            @task
            def add(a, b):
                return a + b
            add.expand_kwargs(configs())
            @task
            def pair(x, y):
                return f"{x}{y}"
            pair.expand(x=[2, 4, 8], y=[5, 10])
            BashOperator.partial(task_id="echo").expand(
                bash_command=["echo {{ run_id[:6] }}", "echo {{ task.task_id }}"])
        k()
    """)
    doc = await run(cluster, "k")
    assert doc["state"] == "success"
    assert [t["return_value"] for t in instances(doc, "add")] == [3, 7]
    assert [t["return_value"] for t in instances(doc, "pair")] == ["25", "210", "45", "410", "85", "810"]
    assert [t["return_value"] for t in instances(doc, "echo")] == ["manual", "echo"]


async def test_unmappable_producer_fails_and_consumer_is_upstream_failed(cluster: Cluster):
    cluster.write_dag("u.py", """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def u():
            @task(retries=1, retry_delay=0)
            def text():
                return "not a list"
            @task(trigger_rule="all_done")
            def each(x):
                return x
            each.expand(x=text())
        u()
    """)
    doc = await run(cluster, "u")
    producer = instances(doc, "text")[0]
    assert (producer["state"], producer["try_number"]) == ("failed", 2)
    assert instances(doc, "each")[0]["state"] == "upstream_failed"
    conn = await cluster.connect()
    try:
        error = await conn.fetchval("SELECT error FROM task_instance WHERE task_id = 'text'")
    finally:
        await conn.close()
    assert "unmappable return type 'str'" in error


async def test_examples_from_the_readme(cluster: Cluster):
    import shutil
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples" / "dags"
    for name in ("elt_files.py", "hyperparameter_sweep.py"):
        shutil.copy(examples / name, cluster.dags_folder / name)
    elt = await run(cluster, "elt_files")
    sweep = await run(cluster, "hyperparameter_sweep")
    assert elt["state"] == sweep["state"] == "success"
    assert [t["label"] for t in instances(elt, "load")] == [f"orders_{n:02d}.csv" for n in range(6)]
    assert instances(elt, "summarize")[0]["return_value"]["files"] == 6
    assert len(instances(sweep, "train")) == 9
    assert instances(sweep, "pick_best")[0]["return_value"] == {"learning_rate": 0.1, "depth": 4, "loss": 0.05}
    assert instances(sweep, "train")[0]["label"] == "lr=0.3 depth=2"


async def test_wider_than_the_schedulers_window(cluster: Cluster):
    """1,200 instances: the scheduler reads 512 at a time; every one is decided."""
    cluster.write_dag("wide.py", """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1), max_active_tasks=64)
        def wide():
            @task
            def fails():
                raise ValueError("no input today")

            @task
            def echo(x):
                return x

            @task
            def after(x, _=None):
                return x

            echo.expand(x=list(range(1200)))
            after.partial(_=fails()).expand(x=list(range(1200)))
        wide()
    """)
    doc = await run(cluster, "wide", 180)
    by_state: dict[tuple[str, str], int] = {}
    for t in doc["tasks"]:
        key = (t["task_id"], t["state"])
        by_state[key] = by_state.get(key, 0) + 1
    assert doc["state"] == "failed"
    assert by_state == {("echo", "success"): 1200, ("after", "upstream_failed"): 1200,
                        ("fails", "failed"): 1}
    echoed = sorted(t["return_value"] for t in doc["tasks"] if t["task_id"] == "echo")
    assert echoed == list(range(1200))
