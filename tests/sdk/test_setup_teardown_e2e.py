"""Setup/teardown, depends_on_past and LatestOnlyOperator on Sluice's real daemons.

One scheduler and one worker run as processes over ``dags_setup_teardown/``,
unmodified Airflow DAG files. The scheduler's repair sweep is slowed to five
minutes, so a run blocked on its past that goes on within seconds was woken by
the pass over its previous run (event driven), not by the sweep.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from tests.cluster import Cluster, own_cluster, wait_for

pytestmark = pytest.mark.timeout(300)

DAGS = Path(__file__).parent / "dags_setup_teardown"
RUN_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
async def st(services, template_db, tmp_path_factory):
    root = tmp_path_factory.mktemp("st")
    async with own_cluster(services, template_db, root, name="st", dags=DAGS) as cluster:
        (root / "gates").mkdir()
        cluster.start("scheduler", SLUICE_REPAIR_INTERVAL_S="300")
        cluster.start("worker", ST_GATES_DIR=str(root / "gates"))
        yield cluster


def states(doc: dict) -> dict[str, str | None]:
    return {t["task_id"]: t["state"] for t in doc["tasks"]}


async def run_of(cluster: Cluster, dag_id: str, conf: dict | None = None) -> dict:
    run_id = await cluster.trigger(dag_id, conf)
    return await cluster.wait_run(run_id, RUN_TIMEOUT_S)


async def task_state(cluster: Cluster, run_id: str, task_id: str) -> dict:
    return Cluster.by_task(await cluster.run_doc(run_id))[task_id]


# --- setup and teardown ----------------------------------------------------------------------
async def test_one_of_two_setups_failing_fails_the_work_and_the_teardown_runs(st):
    doc = await run_of(st, "st_one_setup_fails")
    assert states(doc) == {"broken_setup": "failed", "create_cluster": "success",
                           "delete_cluster": "success", "run_query": "upstream_failed"}
    assert doc["state"] == "failed"


async def test_the_only_setup_failing_leaves_the_teardown_unrun(st):
    doc = await run_of(st, "st_setup_fails")
    assert states(doc) == {"broken_setup": "failed", "drop_cluster": "upstream_failed",
                           "run_query": "upstream_failed"}
    assert doc["state"] == "failed"


async def test_failed_work_still_runs_the_teardown_with_the_setups_value(st):
    doc = await run_of(st, "st_work_fails")
    tasks = Cluster.by_task(doc)
    assert states(doc) == {"create_cluster": "success", "delete_cluster": "success",
                           "failing_query": "failed"}
    assert tasks["delete_cluster"]["return_value"] == "deleted cluster-1"
    assert doc["state"] == "failed"


async def test_a_failed_teardown_does_not_fail_the_run(st):
    doc = await run_of(st, "st_teardown_fails")
    assert states(doc) == {"broken_teardown_body": "failed", "create_cluster": "success",
                           "run_query": "success"}
    assert doc["state"] == "success"


async def test_a_failed_teardown_with_on_failure_fail_dagrun_fails_the_run(st):
    doc = await run_of(st, "st_teardown_fails_run")
    assert states(doc)["broken_teardown_body"] == "failed"
    assert doc["state"] == "failed"


# --- depends_on_past ---------------------------------------------------------------------------
async def test_a_failed_previous_instance_keeps_the_next_one_waiting_not_deadlocked(st):
    first = await run_of(st, "st_depends_on_past", {"n": 1, "fail": True})
    assert (first["state"], states(first)["gate"]) == ("failed", "failed")
    second = await st.trigger("st_depends_on_past", {"n": 2})

    async def independent_done():
        return (await task_state(st, second, "independent"))["state"] == "success"

    await wait_for(independent_done, RUN_TIMEOUT_S, "the independent task of the second run")
    doc = await st.run_doc(second)
    assert (doc["state"], states(doc)["gate"]) == ("running", None)


async def test_wait_for_downstream_holds_the_next_run_until_the_previous_downstream_ends(st):
    gates = st.root / "gates"
    first = await st.trigger("st_wait_for_downstream", {"n": 1})

    async def first_gate_done():
        return (await task_state(st, first, "wfd_gate"))["state"] == "success"

    await wait_for(first_gate_done, RUN_TIMEOUT_S, "the first run's gate")
    second = await st.trigger("st_wait_for_downstream", {"n": 2})

    async def second_started():
        return (await st.run_doc(second))["tasks"]

    await wait_for(second_started, RUN_TIMEOUT_S, "the second run's instances")
    assert (await task_state(st, second, "wfd_gate"))["state"] is None  # first's `after` runs
    (gates / "after_1").touch()
    first_doc = await st.wait_run(first, RUN_TIMEOUT_S)
    assert first_doc["state"] == "success"

    async def second_gate_done():
        return (await task_state(st, second, "wfd_gate"))["state"] == "success"

    await wait_for(second_gate_done, 60, "the second run's gate, woken by the first run's pass")
    (gates / "after_2").touch()
    second_doc = await st.wait_run(second, RUN_TIMEOUT_S)
    assert second_doc["state"] == "success"
    released = datetime.fromisoformat(Cluster.by_task(first_doc)["after"]["end_date"])
    started = datetime.fromisoformat(Cluster.by_task(second_doc)["wfd_gate"]["start_date"])
    assert started >= released


# --- LatestOnlyOperator ------------------------------------------------------------------------
async def test_latest_only_skips_downstream_in_catch_up_runs_and_runs_it_in_the_latest(st):
    await st.wait_dag("st_latest_only", timeout=90)

    async def four_finished():
        conn = await st.connect()
        try:
            rows = await conn.fetch("SELECT run_id, state FROM dag_run WHERE dag_id = 'st_latest_only' "
                                    "ORDER BY logical_date")
        finally:
            await conn.close()
        return rows if len(rows) == 4 and all(r["state"] in ("success", "failed") for r in rows) \
            else None

    rows = await wait_for(four_finished, 120, "the four catch-up runs of st_latest_only")
    docs = [await st.run_doc(r["run_id"]) for r in rows]
    assert [d["state"] for d in docs] == ["success"] * 4
    skipped = {"latest_only": "success", "notify": "skipped", "tail": "skipped"}
    assert [states(d) for d in docs] == [skipped] * 3 + [
        {"latest_only": "success", "notify": "success", "tail": "success"}]


async def test_latest_only_lets_a_manual_run_go_on(st):
    doc = await run_of(st, "st_latest_only_manual")
    assert states(doc) == {"latest_only": "success", "notify": "success"}
    assert doc["state"] == "success"
