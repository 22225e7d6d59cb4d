"""Deferral end to end with Airflow's own operators, sensors and triggers (Task SDK runtime).

The scheduler, triggerer and worker run as processes over the unmodified DAG files
of ``dags_deferral/``: the standard provider's deferrable sensors, a trigger class kept
in the DAG folder, mapped ``start_from_trigger`` with per-index kwargs, triggers that
raise, time out or end their task, and 200 mapped instances deferring at once. The cluster is shared by the
module's tests; each triggers its own DAG.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import anyio
import pytest

from tests.cluster import Cluster, fired, log_events, own_cluster, task_log, tasks_of

pytestmark = pytest.mark.timeout(240)

DAGS = Path(__file__).parent / "dags_deferral"
RUN_TIMEOUT_S = 90.0
MANY = 200
MANY_SECONDS = float(os.environ.get("SLUICE_TEST_DEFERRAL_S", "2"))  # 5 for the figure


@pytest.fixture(scope="module")
async def cluster(services, template_db, tmp_path_factory):
    async with own_cluster(services, template_db, tmp_path_factory.mktemp("deferral"),
                           name="defer", dags=DAGS) as c:
        c.start_all()
        yield c


async def trigger_and_wait(cluster: Cluster, dag_id: str, conf: dict | None = None) -> dict:
    """``sluice dags trigger DAG --wait --json``: the finished run's document."""
    await cluster.wait_dag(dag_id, timeout=60)
    args = ["dags", "trigger", dag_id, "--wait", "--json", "--timeout", str(RUN_TIMEOUT_S)]
    if conf:
        args += ["--conf", json.dumps(conf)]
    out = await anyio.to_thread.run_sync(lambda: cluster.cli(*args))
    assert out.returncode in (0, 1), (out.returncode, out.stderr, cluster.log("triggerer")[-3000:])
    return json.loads(out.stdout)


def ts(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


# --- the standard provider's deferrable sensors ----------------------------------------------
async def test_deferrable_sensors_wait_in_the_triggerer_and_resume_on_a_worker(cluster):
    doc = await trigger_and_wait(cluster, "deferral_sensors")
    tasks = tasks_of(doc)
    assert doc["state"] == "success", {k: t["state"] for k, t in tasks.items()}
    run_start = ts(doc["start_date"])
    for task_id in ("wait_until", "wait_delta", "from_trigger", "ended_in_trigger"):
        t = tasks[task_id, -1]
        assert (t["state"], t["try_number"]) == ("success", 1), (task_id, t)
        assert (ts(t["end_date"]) - run_start).total_seconds() >= 1.0, (task_id, t)
    assert tasks["after", -1]["return_value"] == "every sensor passed"
    by_task = {e["task_id"]: e for e in fired(cluster, "deferral_sensors")}
    assert set(by_task) == {"wait_until", "wait_delta", "from_trigger", "ended_in_trigger"}
    assert by_task["ended_in_trigger"]["state"] == "success"  # ended in the triggerer
    # what reached a worker, from each try's log: (deferrals, runs of the task's code)
    runs = {task_id: (log.count("Pausing task as DEFERRED"), log.count("::group::Post Execute"))
            for task_id in by_task for log in [task_log(cluster, doc, task_id)]}
    assert runs == {
        "wait_until": (1, 2),        # execute() deferred, execute_complete() resumed it
        "wait_delta": (1, 2),
        "from_trigger": (0, 1),      # started in the triggerer: a worker only finished it
        "ended_in_trigger": (1, 1),  # ended by its TaskSuccessEvent: never resumed
    }


# --- a trigger class from the DAG folder -----------------------------------------------------
async def test_a_dag_folder_trigger_hands_execute_complete_its_event(cluster):
    doc = await trigger_and_wait(cluster, "deferral_custom")
    tasks = tasks_of(doc)
    assert doc["state"] == "success", tasks
    echo = tasks["echo", -1]
    assert (echo["state"], echo["try_number"]) == ("success", 1)
    value = echo["return_value"]
    assert {k: value[k] for k in ("label", "asked", "waited_s", "pair", "try")} == {
        "label": "HELLO DEFERRAL_CUSTOM", "asked": 1, "waited_s": 1.0, "pair": [1, "two"],
        "try": 1}
    assert ts(value["fired_at"]) <= ts(echo["end_date"])
    assert (ts(echo["end_date"]) - ts(echo["start_date"])).total_seconds() >= 1.0
    assert tasks["report", -1]["return_value"] == "HELLO DEFERRAL_CUSTOM after 1.0s"
    log = task_log(cluster, doc, "echo")
    assert "deferring for 1 s" in log and "resumed with hello deferral_custom" in log
    echoed = [e for e in log_events(cluster, "triggerer")
              if e.get("event") == "echoing hello deferral_custom"]
    assert [e["task_id"] for e in echoed] == ["echo"]  # the trigger's own line, with its ids


# --- mapped start_from_trigger ---------------------------------------------------------------
async def test_mapped_start_from_trigger_reaches_a_worker_only_to_finish(cluster):
    doc = await trigger_and_wait(cluster, "deferral_start_mapped")
    tasks = tasks_of(doc)
    assert doc["state"] == "success", {k: t["state"] for k, t in tasks.items()}
    run_start = ts(doc["start_date"])
    for i, seconds in enumerate((1, 2, 3)):
        t = tasks["wait", i]
        assert (t["state"], t["try_number"], t["return_value"]["try"]) == ("success", 1, 1)
        waited = (ts(t["return_value"]["fired_at"]) - run_start).total_seconds()
        assert seconds - 0.05 <= waited < seconds + 3, (i, waited)
    assert tasks["done", -1]["return_value"] == 3
    for i in range(3):  # on a worker: no deferral, one run (execute_complete only)
        log = task_log(cluster, doc, "wait", map_index=i)
        assert (log.count("Pausing task as DEFERRED"), log.count("::group::Post Execute")) == \
            (0, 1), i
    # index 0 of "mixed" started in the triggerer, index 1 ran poke() on a worker
    assert tasks["mixed", 0]["return_value"]["try"] == 1
    assert tasks["mixed", 1]["return_value"] is None
    starts = {(e["task_id"], e["map_index"]) for e in fired(cluster, "deferral_start_mapped")}
    assert starts == {("wait", 0), ("wait", 1), ("wait", 2), ("mixed", 0)}


# --- failures, timeouts, task-end events -----------------------------------------------------
async def test_trigger_failures_timeouts_and_end_events_follow_the_retry_rules(cluster):
    doc = await trigger_and_wait(cluster, "deferral_failures")
    tasks = tasks_of(doc)
    got = {k[0]: (t["state"], t["try_number"]) for k, t in tasks.items()}
    assert doc["state"] == "failed"
    assert got == {
        "flaky": ("success", 2),          # Trigger failure costs try 1; try 2 fires
        "broken": ("failed", 1),          # no retries left
        "patient": ("failed", 2),         # Trigger timeout: retried, timed out again
        "sensor_timeout": ("failed", 1),  # a sensor's timeout is final
        "start_timeout": ("failed", 1),   # also when it started in the triggerer
        "ended_ok": ("success", 1),       # TaskSuccessEvent: no worker resumes it
        "ended_failed": ("failed", 2),    # TaskFailedEvent with a try left: up_for_retry
        "after_ended": ("success", 1),
    }
    assert tasks["flaky", -1]["return_value"] == {"event": {"fired_on_try": 2}, "try": 2}
    assert tasks["ended_ok", -1]["return_value"] == {"rows": 3}
    assert tasks["after_ended", -1]["return_value"] == 4
    flaky_1 = task_log(cluster, doc, "flaky", attempt=1)
    assert "Trigger failure" in flaky_1 and "flaky trigger breaks on try 1" in flaky_1
    broken = task_log(cluster, doc, "broken")
    assert "TaskDeferralError" in broken and "flaky trigger breaks on try 1" in broken
    for attempt in (1, 2):
        assert "Trigger timeout" in task_log(cluster, doc, "patient", attempt=attempt)
    for task_id in ("sensor_timeout", "start_timeout"):
        assert "AirflowSensorTimeout" in task_log(cluster, doc, task_id)
    ended_ok = task_log(cluster, doc, "ended_ok")  # deferred from execute(), never resumed
    assert (ended_ok.count("Pausing task as DEFERRED"), ended_ok.count("::group::Post Execute")) \
        == (1, 1)
    ended = [e["state"] for e in fired(cluster, "deferral_failures")
             if e["task_id"] == "ended_failed"]
    assert ended == ["up_for_retry", "failed"]
    resumed_with_failure = [e for e in log_events(cluster, "triggerer")
                            if e.get("event") == "trigger_resumed_with_failure"
                            and e.get("dag_id") == "deferral_failures"]
    assert sorted((e["task_id"], e["error"]) for e in resumed_with_failure) == [
        ("broken", "Trigger failure"), ("flaky", "Trigger failure"),
        ("patient", "Trigger timeout"), ("patient", "Trigger timeout"),
        ("sensor_timeout", "Trigger timeout"), ("start_timeout", "Trigger timeout")]


# --- many at once ----------------------------------------------------------------------------
async def test_two_hundred_mapped_deferrals_end_to_end(cluster):
    doc = await trigger_and_wait(cluster, "deferral_many", {"seconds": MANY_SECONDS})
    naps = [t for t in doc["tasks"] if t["task_id"] == "nap"]
    assert len(naps) == MANY
    assert {(t["state"], t["try_number"]) for t in naps} == {("success", 1)}
    assert sorted(t["return_value"] for t in naps) == list(range(MANY))
    took = (ts(doc["end_date"]) - ts(doc["start_date"])).total_seconds()
    print(f"\n{MANY} mapped deferrals of {MANY_SECONDS:g} s: run took {took:.2f} s")
    # every instance waited at once (one after another would take 200 waits), with the
    # worker legs (400 tries on a shared 2-core machine) around them
    assert MANY_SECONDS <= took < MANY_SECONDS + 15, took
