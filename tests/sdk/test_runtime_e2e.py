"""Unmodified Airflow 3 DAG files run end to end on Sluice's real daemons, Task SDK runtime.

One scheduler and one worker run as processes (Airflow's DagBag parses, slots run
tries with the Task SDK against the worker's Execution API) over the DAG files of
``dags_e2e/``, written as Airflow's docs write them. The cluster is shared by the module's tests; each triggers its own DAG.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from tests.cluster import Cluster, own_cluster, states, task_log_path, tasks_of

pytestmark = pytest.mark.timeout(180)

DAGS = Path(__file__).parent / "dags_e2e"
RUN_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
async def e2e(services, template_db, tmp_path_factory):
    async with own_cluster(services, template_db, tmp_path_factory.mktemp("e2e"), name="e2e",
                           dags=DAGS) as cluster:
        cluster.start("scheduler")
        cluster.start("worker")
        yield cluster


async def trigger_and_wait(cluster: Cluster, dag_id: str) -> tuple[int, dict]:
    """``sluice dags trigger DAG --wait --json``: its exit code and its JSON document."""
    await cluster.wait_dag(dag_id, timeout=60)
    out = await anyio.to_thread.run_sync(lambda: cluster.cli(
        "dags", "trigger", dag_id, "--wait", "--json", "--timeout", str(RUN_TIMEOUT_S)))
    assert out.returncode in (0, 1), (out.returncode, out.stderr, cluster.log("worker")[-3000:])
    return out.returncode, json.loads(out.stdout)


# --- tests ---------------------------------------------------------------------------------
async def test_a_taskflow_chain_passes_its_return_values_and_prints_designs_json(e2e):
    code, doc = await trigger_and_wait(e2e, "e2e_taskflow")
    assert code == 0, doc
    assert set(doc) == {"dag_id", "run_id", "state", "start_date", "end_date", "tasks"}
    assert (doc["dag_id"], doc["state"]) == ("e2e_taskflow", "success")
    assert [(t["task_id"], t["map_index"]) for t in doc["tasks"]] == [
        ("extract", -1), ("load", -1), ("transform", -1)]
    for t in doc["tasks"]:
        assert set(t) == {"task_id", "map_index", "label", "state", "try_number",
                          "return_value", "start_date", "end_date"}
        assert (t["state"], t["try_number"], t["label"]) == ("success", 1, None)
        assert t["start_date"].endswith("+00:00") and "." in t["start_date"]
    tasks = tasks_of(doc)
    assert tasks["extract", -1]["return_value"] == {"1001": 301.27, "1002": 433.21,
                                                    "1003": 502.22}
    assert tasks["transform", -1]["return_value"] == {"total_order_value": 1236.7, "orders": 3}
    assert tasks["load", -1]["return_value"] == "3 orders, total 1236.70"


async def test_classic_operators_variables_and_self_log(e2e):
    for args in (["variables", "set", "greeting", "hi there"],
                 ["variables", "set", "config", '{"depth": 3}', "--json"]):
        out = await anyio.to_thread.run_sync(lambda a=args: e2e.cli(*a))
        assert out.returncode == 0, out.stderr
    code, doc = await trigger_and_wait(e2e, "e2e_classic")
    assert code == 0, doc
    tasks = tasks_of(doc)
    assert tasks["python_op", -1]["return_value"] == "hello sluice from python_op"
    assert tasks["bash_op", -1]["return_value"] == "var says hi there"
    assert tasks["shout", -1]["return_value"] == "HI THERE"
    assert tasks["read_variable", -1]["return_value"] == {
        "greeting": "hi there", "config": {"depth": 3}, "missing": "fallback"}
    log = task_log_path(e2e, doc, "shout")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(line["event"] == "shouting HI THERE" and line["level"] == "info"
               for line in lines), lines


async def test_mapping_over_literals_upstream_output_kwargs_and_a_task_group(e2e):
    code, doc = await trigger_and_wait(e2e, "e2e_mapping")
    assert code == 0, doc
    tasks = tasks_of(doc)
    assert [tasks["double", i]["return_value"] for i in range(3)] == [2, 4, 6]
    assert tasks["total_literal", -1]["return_value"] == 12
    assert [tasks["add", i]["return_value"] for i in range(4)] == [11, 12, 13, 14]
    assert tasks["total_upstream", -1]["return_value"] == 50
    assert [tasks["describe", i]["return_value"] for i in range(2)] == ["a:1", "b:2"]
    assert [tasks["grow.square", i]["return_value"] for i in range(3)] == [4, 9, 16]
    assert tasks["collect", -1]["return_value"] == [4, 9, 16]
    assert set(states(doc).values()) == {"success"}


async def test_branches_and_short_circuits_skip_what_they_say(e2e):
    code, doc = await trigger_and_wait(e2e, "e2e_branching")
    assert code == 0, doc
    assert states(doc) == {
        "pick": "success", "left": "success", "right": "skipped", "join": "success",
        "classic_pick": "success", "classic_yes": "success", "classic_no": "skipped",
        "gate": "success", "behind_gate": "skipped",
        "open_gate": "success", "behind_open_gate": "success"}
    # as in Airflow 3: a branch ends by raising DownstreamTasksSkipped, its value not pushed
    assert tasks_of(doc)["pick", -1]["return_value"] is None


async def test_sensor_and_virtualenv_decorators_chain_linear_and_labels(e2e):
    code, doc = await trigger_and_wait(e2e, "e2e_authoring")
    assert code == 0, doc
    assert set(states(doc).values()) == {"success"} and len(doc["tasks"]) == 7
    assert tasks_of(doc)["ready", -1]["return_value"] == "the data is there"
    assert tasks_of(doc)["isolated", -1]["return_value"] == {
        "prefix_is_not_ours": True, "got": "the data is there"}
    conn = await e2e.connect()  # chain_linear: b and c each before d and e
    try:
        spec = await conn.fetchval("SELECT serialized FROM dag WHERE dag_id = 'e2e_authoring'")
    finally:
        await conn.close()
    tasks = {t["task_id"]: t for t in spec["tasks"]}
    assert tasks["d"]["upstream"] == tasks["e"]["upstream"] == ["b", "c"]
    assert tasks["a"]["upstream"] == ["ready"]  # a Label is an edge's name, not a task


async def test_retries_then_failure_and_a_dying_task_process(e2e):
    code, doc = await trigger_and_wait(e2e, "e2e_failures")
    assert code == 1 and doc["state"] == "failed"
    tasks = tasks_of(doc)
    assert (tasks["always_fails", -1]["state"], tasks["always_fails", -1]["try_number"]) == (
        "failed", 3)
    assert tasks["downstream", -1]["state"] == "upstream_failed"
    assert (tasks["exits", -1]["state"], tasks["exits", -1]["try_number"]) == ("failed", 2)
    conn = await e2e.connect()
    try:
        errors = dict(await conn.fetch("SELECT task_id, error FROM task_instance"))
    finally:
        await conn.close()
    assert errors["exits"] == "task process exited unexpectedly (exit code 3)"
    assert errors["always_fails"] == "ValueError: this task never works"
    for attempt in (1, 2, 3):
        lines = task_log_path(e2e, doc, "always_fails", attempt=attempt).read_text().splitlines()
        failed = [json.loads(line) for line in lines if "Task failed with exception" in line]
        assert [(e["exc_type"], e["exc_value"]) for e in failed[0]["exception"]] == [
            ("ValueError", "this task never works")]
        assert failed[0]["try_number"] == attempt
