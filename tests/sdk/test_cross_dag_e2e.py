"""Cross-DAG operators end to end: ``TriggerDagRunOperator`` and ``ExternalTaskSensor``.

The scheduler, triggerer and worker run as processes over the unmodified DAG files of
``dags_cross_dag/``. A DAG triggers ``cross_target`` with a conf and waits for it in the
task (poke) or in the triggerer (``DagStateTrigger``); a second trigger of the same run
id resets the run; a failed target fails the waiting task with Airflow's message.
``cross_fanout`` starts ``cross_target`` and the sensor DAGs at one logical date, whose
``ExternalTaskSensor``\\ s (poke, reschedule, deferrable; a task, a task group, the whole
run; ``execution_delta`` and ``execution_date_fn``) pass when ``cross_target``'s work
succeeds and fail on ``failed_states`` when it fails. The cluster is shared by the
module's tests; each starts its own runs.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import asyncpg
import pytest

from shared.runview import run_document
from tests.cluster import Cluster, fired, own_cluster, states, task_log, wait_for

pytestmark = pytest.mark.timeout(420)

DAGS = Path(__file__).parent / "dags_cross_dag"
RUN_TIMEOUT_S = 150.0
SENSOR_DAGS = ["cross_sensor_poke", "cross_sensor_reschedule", "cross_sensor_deferrable"]


@pytest.fixture(scope="module")
async def cluster(services, template_db, tmp_path_factory):
    async with own_cluster(services, template_db, tmp_path_factory.mktemp("cross_dag"),
                           name="cross", dags=DAGS) as c:
        # poke-mode waiters hold a slot each while the DAG they wait on needs slots too
        c.start_all(SLUICE_WORKER_CONCURRENCY="6")
        for dag_id in ("cross_target", "cross_trigger_poke", "cross_trigger_deferrable",
                       "cross_trigger_errors", "cross_fanout", *SENSOR_DAGS,
                       "cross_sensor_delta"):
            await c.wait_dag(dag_id, timeout=120)
        yield c


# --- helpers ---------------------------------------------------------------------------------
async def trigger_and_wait(cluster: Cluster, dag_id: str, conf: dict | None = None) -> dict:
    """``sluice dags trigger DAG --wait --json``: the finished run's document."""
    args = ["dags", "trigger", dag_id, "--wait", "--json", "--timeout", str(RUN_TIMEOUT_S)]
    if conf:
        args += ["--conf", json.dumps(conf)]
    out = await anyio.to_thread.run_sync(lambda: cluster.cli(*args, timeout=RUN_TIMEOUT_S + 30))
    assert out.returncode in (0, 1), (out.returncode, out.stderr, cluster.log("worker")[-3000:])
    return json.loads(out.stdout)


async def run_doc(cluster: Cluster, dag_id: str, run_id: str) -> dict | None:
    conn = await cluster.connect()
    try:
        return await run_document(conn, run_id, dag_id)
    finally:
        await conn.close()


async def finished_run(cluster: Cluster, dag_id: str, run_id: str) -> dict:
    """The document of run ``run_id`` of ``dag_id`` once it has finished."""
    async def finished():
        doc = await run_doc(cluster, dag_id, run_id)
        return doc["doc"] if doc and doc["doc"]["state"] in ("success", "failed") else None

    return await wait_for(finished, RUN_TIMEOUT_S, f"run {run_id} of {dag_id} to finish")


async def run_row(cluster: Cluster, dag_id: str, **where) -> asyncpg.Record:
    """The one run of ``dag_id`` with the given run_id or logical_date (waits for it)."""
    (column, value), = where.items()

    async def found():
        conn = await cluster.connect()
        try:
            return await conn.fetchrow(
                "SELECT run_id, run_type, logical_date, conf, clear_number, created_at, "
                f"start_date FROM dag_run WHERE dag_id = $1 AND {column} = $2", dag_id, value)
        finally:
            await conn.close()

    return await wait_for(found, 60, f"a run of {dag_id} with {column} {value}")


def tasks_of(doc: dict) -> dict[str, dict]:
    return {t["task_id"] if t["map_index"] < 0 else f"{t['task_id']}[{t['map_index']}]": t
            for t in doc["tasks"]}


def ts(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


async def fan_out(cluster: Cluster, conf: dict) -> tuple[dict, datetime]:
    """Run ``cross_fanout`` (which starts the target and sensor DAGs); its doc and date."""
    doc = await trigger_and_wait(cluster, "cross_fanout", conf)
    assert doc["state"] == "success", states(doc)
    row = await run_row(cluster, "cross_fanout", run_id=doc["run_id"])
    return doc, row["logical_date"]


# --- TriggerDagRunOperator -------------------------------------------------------------------
@pytest.mark.parametrize("dag_id", ["cross_trigger_poke", "cross_trigger_deferrable"])
async def test_a_dag_triggers_another_with_conf_and_waits_for_it(cluster, dag_id):
    target_run_id = f"from_{dag_id}_{uuid.uuid4().hex[:8]}"
    doc = await trigger_and_wait(cluster, dag_id, {"target_conf": {"who": dag_id, "n": [1, 2]},
                                                   "target_run_id": target_run_id})
    assert doc["state"] == "success", states(doc)
    a = tasks_of(doc)
    assert a["after"]["return_value"] == target_run_id  # the operator's trigger_run_id XCom

    b = await finished_run(cluster, "cross_target", target_run_id)
    assert b["state"] == "success", states(b)
    seen = tasks_of(b)["read_conf"]["return_value"]
    assert (seen["conf"], seen["run_id"]) == ({"who": dag_id, "n": [1, 2]}, target_run_id)
    # the trigger task ended only once the run it started had finished
    assert ts(a["trigger_target"]["end_date"]) >= ts(b["end_date"])
    row = await run_row(cluster, "cross_target", run_id=target_run_id)
    # Sluice: a task's run is a manual run (Airflow's run_type is "operator_triggered")
    assert row["run_type"] == "manual"
    # picked up at once: the API wakes the scheduler (its repair sweep would be later)
    assert (row["start_date"] - row["created_at"]).total_seconds() < 10
    log = task_log(cluster, doc, "trigger_target")
    assert "Dag Run triggered successfully." in log, log[-2000:]
    if dag_id == "cross_trigger_deferrable":  # waited in the triggerer, resumed once
        assert log.count("Pausing task as DEFERRED") == 1, log[-2000:]
        assert [e["task_id"] for e in fired(cluster, dag_id)
                if e.get("run_id") == doc["run_id"]] == ["trigger_target"]
    else:
        assert "Pausing task as DEFERRED" not in log
        assert "DagRun finished with allowed state." in log, log[-2000:]


async def test_reset_dag_run_clears_the_existing_run_and_it_runs_again(cluster):
    """``reset_dag_run=True`` and a run of that id: the SDK's trigger gets a 409 and clears
    the run; the run's conf stays the first one, as Airflow documents ("DAG run conf is
    immutable and will not be reset on rerun of an existing DAG run",
    https://github.com/apache/airflow/blob/main/providers/standard/src/airflow/providers/standard/operators/trigger_dagrun.py)."""
    target_run_id = f"reset_{uuid.uuid4().hex[:8]}"
    first = await trigger_and_wait(cluster, "cross_trigger_poke", {
        "target_conf": {"who": "first"}, "target_run_id": target_run_id})
    assert first["state"] == "success", states(first)
    before = await finished_run(cluster, "cross_target", target_run_id)

    second = await trigger_and_wait(cluster, "cross_trigger_poke", {
        "target_conf": {"who": "second"}, "target_run_id": target_run_id})
    assert second["state"] == "success", states(second)
    after = await finished_run(cluster, "cross_target", target_run_id)
    row = await run_row(cluster, "cross_target", run_id=target_run_id)
    assert row["clear_number"] == 1
    b = tasks_of(after)
    assert {k: (t["state"], t["try_number"]) for k, t in b.items()} == {
        k: ("success", 2) for k in ("read_conf", "produce", "work.step_one", "work.step_two",
                                    "mark_sensor_poke")}
    assert b["read_conf"]["return_value"]["conf"] == {"who": "first"}
    assert ts(after["start_date"]) > ts(before["end_date"])
    log = task_log(cluster, second, "trigger_target")
    assert "Dag Run already exists; Resetting Dag Run." in log, log[-2000:]


async def test_a_failed_target_fails_the_waiting_trigger_task_with_airflows_message(cluster):
    ids = {dag_id: f"fail_{dag_id}_{uuid.uuid4().hex[:8]}"
           for dag_id in ("cross_trigger_poke", "cross_trigger_deferrable")}
    async with anyio.create_task_group() as tg:
        docs: dict[str, dict] = {}

        async def one(dag_id: str) -> None:
            docs[dag_id] = await trigger_and_wait(cluster, dag_id, {
                "target_conf": {"fail": True, "who": dag_id}, "target_run_id": ids[dag_id]})

        for dag_id in ids:
            tg.start_soon(one, dag_id)
    for dag_id, doc in docs.items():
        assert doc["state"] == "failed"
        assert states(doc) == {"trigger_target": "failed", "after": "upstream_failed"}, dag_id
        b = await finished_run(cluster, "cross_target", ids[dag_id])
        assert states(b) == {"read_conf": "success", "produce": "failed",
                             "work.step_one": "upstream_failed",
                             "work.step_two": "upstream_failed",
                             "mark_sensor_poke": "upstream_failed"}
        assert "cross_target was asked to fail by " + dag_id in task_log(cluster, b, "produce")
    # poke: the SDK's runner logs "DagRun finished with failed state." and fails the try
    # with AirflowException("<dag> failed with failed state <state>"), which it hands
    # only to the retry policy: surprisingly, that message is never logged. See
    # _handle_trigger_dag_run in
    # https://github.com/apache/airflow/blob/main/task-sdk/src/airflow/sdk/execution_time/task_runner.py
    poke = task_log(cluster, docs["cross_trigger_poke"], "trigger_target")
    failed = [json.loads(line) for line in poke.splitlines()
              if '"DagRun finished with failed state."' in line]
    assert [(e["level"], e["dag_id"], e["state"]) for e in failed] == \
        [("error", "cross_target", "failed")], poke[-2000:]
    # deferrable: execute_complete raises AirflowException naming the operator's failed
    # states and the run ids (_trigger_dag_run_af_3_execute_complete in
    # https://github.com/apache/airflow/blob/main/providers/standard/src/airflow/providers/standard/operators/trigger_dagrun.py)
    deferred = task_log(cluster, docs["cross_trigger_deferrable"], "trigger_target")
    assert "cross_target failed with failed states [" in deferred, deferred[-2000:]
    assert f"for run_ids ['{ids['cross_trigger_deferrable']}']" in deferred


async def test_a_trigger_that_cannot_start_its_run_skips_or_fails_as_in_airflow(cluster):
    target_run_id = await cluster.trigger("cross_target", {"who": "errors"})
    doc = await trigger_and_wait(cluster, "cross_trigger_errors",
                                 {"target_run_id": target_run_id})
    assert doc["state"] == "failed"
    assert states(doc) == {"trigger_skip": "skipped", "trigger_duplicate": "failed",
                           "trigger_unknown": "failed"}
    skip = task_log(cluster, doc, "trigger_skip")
    assert "Dag Run already exists, skipping task as skip_when_already_exists is set to True." \
        in skip, skip[-2000:]
    duplicate = task_log(cluster, doc, "trigger_duplicate")
    assert "Dag Run already exists, marking task as failed." in duplicate, duplicate[-2000:]
    unknown = task_log(cluster, doc, "trigger_unknown")
    assert "Dag with dag_id: 'cross_no_such_dag' not found" in unknown, unknown[-2000:]
    # the existing run was left alone
    row = await run_row(cluster, "cross_target", run_id=target_run_id)
    assert (row["conf"], row["clear_number"]) == ({"who": "errors"}, 0)


# --- ExternalTaskSensor ----------------------------------------------------------------------
async def sensor_runs(cluster: Cluster, logical_date: datetime, dag_ids: list[str]) -> dict:
    runs = {}
    for dag_id in dag_ids:
        row = await run_row(cluster, dag_id, logical_date=logical_date)
        runs[dag_id] = await finished_run(cluster, dag_id, row["run_id"])
    return runs


async def test_sensors_pass_when_the_external_work_succeeds(cluster):
    # produce works long enough for every sensor to find it unfinished at first
    _, at = await fan_out(cluster, {"target_conf": {"who": "sensors", "sleep_s": 6},
                                    "sensor_dags": SENSOR_DAGS})
    target = await run_row(cluster, "cross_target", logical_date=at)
    b = await finished_run(cluster, "cross_target", target["run_id"])
    assert b["state"] == "success", states(b)
    produced = ts(tasks_of(b)["produce"]["end_date"])
    # the ExternalTaskMarker runs as the EmptyOperator it is: Airflow 3.3's clearing no
    # longer follows it into the sensor's DAG (nothing in its core reads external_dag_id
    # or recursion_depth: see clear() in
    # https://github.com/apache/airflow/blob/main/airflow-core/src/airflow/serialization/definitions/dag.py)
    assert tasks_of(b)["mark_sensor_poke"]["state"] == "success"
    runs = await sensor_runs(cluster, at, SENSOR_DAGS)
    for dag_id, doc in runs.items():
        got = tasks_of(doc)
        assert doc["state"] == "success", (dag_id, states(doc))
        assert got["report"]["return_value"] == \
            f"{dag_id} saw cross_target at {at.isoformat()}"
        for task_id, t in got.items():
            if task_id.startswith("wait_"):  # each waited for the work it watches
                assert (t["state"], t["try_number"]) == ("success", 1), (dag_id, task_id, t)
                assert ts(t["end_date"]) >= produced, (dag_id, task_id)
    # where each waited: poke on a worker, reschedule and deferrable in the triggerer
    poke = task_log(cluster, runs["cross_sensor_poke"], "wait_task")
    assert "Poking for tasks ['produce'] in dag cross_target" in poke, poke[-2000:]
    assert "Pausing task as DEFERRED" not in poke
    assert {e["task_id"] for e in fired(cluster, "cross_sensor_deferrable")} >= \
        {"wait_task", "wait_group", "wait_dag"}
    assert "wait_task" in {e["task_id"] for e in fired(cluster, "cross_sensor_reschedule")}
    assert "Poking for task_group 'work' in dag 'cross_target'" in \
        task_log(cluster, runs["cross_sensor_reschedule"], "wait_group")


async def test_sensors_fail_on_failed_states_of_the_external_work(cluster):
    _, at = await fan_out(cluster, {"target_conf": {"who": "sensors", "fail": True,
                                                    "sleep_s": 1},
                                    "sensor_dags": SENSOR_DAGS})
    target = await run_row(cluster, "cross_target", logical_date=at)
    b = await finished_run(cluster, "cross_target", target["run_id"])
    assert b["state"] == "failed"
    runs = await sensor_runs(cluster, at, SENSOR_DAGS)
    assert {dag_id: states(doc) for dag_id, doc in runs.items()} == {
        "cross_sensor_poke": {"wait_task": "failed", "report": "upstream_failed"},
        "cross_sensor_reschedule": {"wait_task": "failed", "wait_group": "failed",
                                    "report": "upstream_failed"},
        "cross_sensor_deferrable": {"wait_task": "failed", "wait_group": "failed",
                                    "wait_dag": "failed", "report": "upstream_failed"},
    }
    for dag_id in ("cross_sensor_poke", "cross_sensor_reschedule"):
        log = task_log(cluster, runs[dag_id], "wait_task")
        assert "ExternalTaskFailedError" in log, (dag_id, log[-2000:])
        assert "Some of the external tasks ['produce'] in DAG cross_target failed." in log
    group = task_log(cluster, runs["cross_sensor_reschedule"], "wait_group")
    assert "The external task_group 'work' in DAG 'cross_target' failed." in group
    # deferrable: surprisingly, whatever it waited on (a task, a group, the run), the
    # WorkflowTrigger's "failed" event makes execute_complete raise
    # ExternalDagFailedError("External job has failed."): see execute_complete in
    # https://github.com/apache/airflow/blob/main/providers/standard/src/airflow/providers/standard/sensors/external_task.py
    for task_id in ("wait_task", "wait_group", "wait_dag"):
        log = task_log(cluster, runs["cross_sensor_deferrable"], task_id)
        assert "ExternalDagFailedError" in log and "External job has failed." in log, \
            (task_id, log[-2000:])


async def test_execution_delta_and_execution_date_fn_wait_on_an_earlier_run(cluster):
    _, at = await fan_out(cluster, {"target_conf": {"who": "delta", "sleep_s": 2},
                                    "target_offset_s": 3600,
                                    "sensor_dags": ["cross_sensor_delta"]})
    earlier = at - timedelta(hours=1)
    target = await run_row(cluster, "cross_target", logical_date=earlier)
    b = await finished_run(cluster, "cross_target", target["run_id"])
    assert b["state"] == "success", states(b)
    doc = (await sensor_runs(cluster, at, ["cross_sensor_delta"]))["cross_sensor_delta"]
    assert doc["state"] == "success", states(doc)
    produced = ts(tasks_of(b)["produce"]["end_date"])
    for task_id in ("wait_delta", "wait_date_fn"):
        t = tasks_of(doc)[task_id]
        assert ts(t["end_date"]) >= produced, task_id
        assert earlier.isoformat() in task_log(cluster, doc, task_id), task_id
