"""Sensors end to end: the three daemons as real processes, real PostgreSQL and Redis."""

from __future__ import annotations

import json

import pytest

from shared.runview import run_document
from tests.cluster import Cluster, own_cluster, wait_for

pytestmark = pytest.mark.timeout(240)
PARSE_TIMEOUT_S = 90.0  # the daemons import Airflow before their first parse
RUN_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
async def cluster(services, template_db, tmp_path_factory):
    """One scheduler, triggerer and worker for the module's tests; each writes its own DAG."""
    async with own_cluster(services, template_db, tmp_path_factory.mktemp("sensors"),
                           name="sensors") as c:
        c.start_all()
        yield c


async def _trigger(cluster: Cluster, dag_id: str) -> str:
    """Trigger ``dag_id`` once it is parsed and the worker is up: a sensor's target counts
    from the run's start, so a try started late would find it passed."""
    async def worker_ready():
        return '"worker_ready"' in cluster.log("worker")

    await wait_for(worker_ready, PARSE_TIMEOUT_S, "the worker to be ready")
    await cluster.wait_dag(dag_id, timeout=PARSE_TIMEOUT_S)
    return await cluster.trigger(dag_id)


async def _wait_state(cluster: Cluster, run_id: str, task_id: str, state: str) -> None:
    async def reached():
        doc = await cluster.run_doc(run_id)
        return cluster.by_task(doc)[task_id]["state"] == state

    await wait_for(reached, RUN_TIMEOUT_S, f"{task_id} to be {state}")


async def _error(cluster: Cluster, run_id: str, task_id: str) -> str | None:
    conn = await cluster.connect()
    try:
        full = await run_document(conn, run_id)
    finally:
        await conn.close()
    tasks = [t["task_id"] for t in full["doc"]["tasks"]]
    return full["extra"][tasks.index(task_id)]["error"]


async def test_deferrable_time_delta_sensor_succeeds(cluster: Cluster):
    # 3 s rather than 1 s: the target counts from the run's logical date, and a busy
    # machine may take over a second to start the task, which would then finish
    # at once without deferring (as in Airflow).
    cluster.write_dag("td_sensor.py", """
        from datetime import datetime, timedelta
        from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
        from airflow.sdk import DAG

        with DAG("td_sensor", schedule=None, start_date=datetime(2026, 1, 1)):
            TimeDeltaSensor(task_id="wait", delta=timedelta(seconds=3), deferrable=True)
    """)
    run_id = await _trigger(cluster, "td_sensor")
    await _wait_state(cluster, run_id, "wait", "deferred")
    doc = await cluster.wait_run(run_id, RUN_TIMEOUT_S)
    t = cluster.by_task(doc)["wait"]
    assert (doc["state"], t["state"], t["try_number"]) == ("success", "success", 1)


@pytest.mark.parametrize("soft_fail, expected", [(False, "failed"), (True, "skipped")])
async def test_trigger_timeout_is_final_for_sensors(cluster: Cluster, soft_fail, expected):
    dag_id = f"dt_sensor_{expected}"
    cluster.write_dag(f"{dag_id}.py", f"""
        from datetime import datetime, timedelta
        from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
        from airflow.sdk import DAG

        with DAG("{dag_id}", schedule=None, start_date=datetime(2026, 1, 1)):
            TimeDeltaSensor(task_id="wait", delta=timedelta(days=1), deferrable=True,
                            timeout=1, retries=2, retry_delay=timedelta(seconds=0),
                            soft_fail={soft_fail})
    """)
    run_id = await _trigger(cluster, dag_id)
    await _wait_state(cluster, run_id, "wait", "deferred")
    doc = await cluster.wait_run(run_id, RUN_TIMEOUT_S)
    t = cluster.by_task(doc)["wait"]
    assert (t["state"], t["try_number"]) == (expected, 1)
    assert doc["state"] == ("failed" if expected == "failed" else "success")
    if expected == "failed":
        assert "AirflowSensorTimeout" in (await _error(cluster, run_id, "wait"))


async def test_deferrable_file_sensor(cluster: Cluster, tmp_path):
    target = tmp_path / "landing"
    target.mkdir()
    cluster.write_dag("file_sensor.py", f"""
        from datetime import datetime
        from airflow.providers.standard.sensors.filesystem import FileSensor
        from airflow.sdk import DAG

        with DAG("file_sensor", schedule=None, start_date=datetime(2026, 1, 1)):
            FileSensor(task_id="wait", filepath="{target}/{{{{ ds }}}}-*.csv", deferrable=True,
                       poke_interval=0.1, timeout=60)
    """)
    # FileSensor resolves its path against a connection, fs_default by default, as in Airflow
    added = cluster.cli("connections", "add", "fs_default", "--conn-type", "fs")
    assert added.returncode == 0, added.stderr
    run_id = await _trigger(cluster, "file_sensor")
    await _wait_state(cluster, run_id, "wait", "deferred")
    day = run_id.removeprefix("manual__")[:10]
    (target / f"{day}-orders.csv").write_text("id\n1\n")
    doc = await cluster.wait_run(run_id, RUN_TIMEOUT_S)
    t = cluster.by_task(doc)["wait"]
    assert (doc["state"], t["state"], t["try_number"]) == ("success", "success", 1)


async def test_reschedule_mode_python_sensor(cluster: Cluster, tmp_path):
    counter = tmp_path / "pokes"
    cluster.write_dag("py_sensor.py", f"""
        from datetime import datetime
        from pathlib import Path
        from airflow.providers.standard.sensors.python import PythonSensor
        from airflow.sdk import DAG, PokeReturnValue

        def third_time_lucky(ti=None):
            p = Path({str(counter)!r})
            n = int(p.read_text()) + 1 if p.exists() else 1
            p.write_text(str(n))
            return PokeReturnValue(n >= 3, xcom_value={{"pokes": n, "try": ti.try_number}})

        with DAG("py_sensor", schedule=None, start_date=datetime(2026, 1, 1)):
            PythonSensor(task_id="wait", python_callable=third_time_lucky, mode="reschedule",
                         poke_interval=0.2, timeout=60)
    """)
    run_id = await _trigger(cluster, "py_sensor")
    doc = await cluster.wait_run(run_id, RUN_TIMEOUT_S)
    t = cluster.by_task(doc)["wait"]
    assert (doc["state"], t["state"], t["try_number"]) == ("success", "success", 1)
    assert t["return_value"] == {"pokes": 3, "try": 1}
    assert counter.read_text() == "3"
    # three pokes, each a run of try 1 on the worker: the Task SDK reports the first two
    # up_for_reschedule, and Sluice parks the instance on a trigger until the next poke is
    # due (two waits, each one freeing the worker slot)
    def events(name: str, event: str) -> list[dict]:
        return [e for e in map(json.loads, filter(lambda line: line.startswith("{"),
                                                  cluster.log(name).splitlines()))
                if e.get("event") == event and e.get("dag_id") == "py_sensor"]

    assert [(e["try_number"], e["state"]) for e in events("worker", "task_finished")] == [
        (1, "up_for_reschedule"), (1, "up_for_reschedule"), (1, "success")]
    assert len(events("triggerer", "trigger_fired")) == 2
