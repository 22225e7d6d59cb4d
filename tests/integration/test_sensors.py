"""Sensors end to end: the three daemons as real processes, real PostgreSQL and Redis."""

from __future__ import annotations

import pytest

from shared.runview import run_document
from tests.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(120)


async def _wait_state(cluster: Cluster, run_id: str, task_id: str, state: str) -> None:
    async def reached():
        doc = await cluster.run_doc(run_id)
        return cluster.by_task(doc)[task_id]["state"] == state

    await wait_for(reached, 30, f"{task_id} to be {state}")


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
        from shared.sdk import DAG
        from shared.sdk.sensors import TimeDeltaSensor

        with DAG("td_sensor", schedule=None, start_date=datetime(2026, 1, 1)):
            TimeDeltaSensor(task_id="wait", delta=timedelta(seconds=3), deferrable=True)
    """)
    cluster.start_all()
    run_id = await cluster.trigger("td_sensor")
    await _wait_state(cluster, run_id, "wait", "deferred")
    doc = await cluster.wait_run(run_id)
    t = cluster.by_task(doc)["wait"]
    assert (doc["state"], t["state"], t["try_number"]) == ("success", "success", 1)


@pytest.mark.parametrize("soft_fail, expected", [(False, "failed"), (True, "skipped")])
async def test_trigger_timeout_is_final_for_sensors(cluster: Cluster, soft_fail, expected):
    cluster.write_dag("dt_sensor.py", f"""
        from datetime import datetime, timedelta
        from shared.sdk import DAG
        from shared.sdk.sensors import DateTimeSensor

        with DAG("dt_sensor", schedule=None, start_date=datetime(2026, 1, 1)):
            DateTimeSensor(task_id="wait", target_time=datetime(2100, 1, 1), deferrable=True,
                           timeout=1, retries=2, retry_delay=timedelta(seconds=0),
                           soft_fail={soft_fail})
    """)
    cluster.start_all()
    run_id = await cluster.trigger("dt_sensor")
    await _wait_state(cluster, run_id, "wait", "deferred")
    doc = await cluster.wait_run(run_id)
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
        from shared.sdk import DAG
        from shared.sdk.sensors import FileSensor

        with DAG("file_sensor", schedule=None, start_date=datetime(2026, 1, 1)):
            FileSensor(task_id="wait", filepath="{target}/{{{{ ds }}}}-*.csv", deferrable=True,
                       poke_interval=0.1, timeout=60)
    """)
    cluster.start_all()
    run_id = await cluster.trigger("file_sensor")
    await _wait_state(cluster, run_id, "wait", "deferred")
    day = run_id.removeprefix("manual__")[:10]
    (target / f"{day}-orders.csv").write_text("id\n1\n")
    doc = await cluster.wait_run(run_id)
    t = cluster.by_task(doc)["wait"]
    assert (doc["state"], t["state"], t["try_number"]) == ("success", "success", 1)


async def test_reschedule_mode_python_sensor(cluster: Cluster, tmp_path):
    counter = tmp_path / "pokes"
    cluster.write_dag("py_sensor.py", f"""
        from datetime import datetime
        from pathlib import Path
        from shared.sdk import DAG
        from shared.sdk.sensors import PokeReturnValue, PythonSensor

        def third_time_lucky(ti=None):
            p = Path({str(counter)!r})
            n = int(p.read_text()) + 1 if p.exists() else 1
            p.write_text(str(n))
            return PokeReturnValue(n >= 3, xcom_value={{"pokes": n, "try": ti.try_number}})

        with DAG("py_sensor", schedule=None, start_date=datetime(2026, 1, 1)):
            PythonSensor(task_id="wait", python_callable=third_time_lucky, mode="reschedule",
                         poke_interval=0.2, timeout=60)
    """)
    cluster.start_all()
    run_id = await cluster.trigger("py_sensor")
    doc = await cluster.wait_run(run_id)
    t = cluster.by_task(doc)["wait"]
    assert (doc["state"], t["state"], t["try_number"]) == ("success", "success", 1)
    assert t["return_value"] == {"pokes": 3, "try": 1}
    assert counter.read_text() == "3"
    # two waits between the three pokes, each one a deferral that freed the worker slot
    assert cluster.log("worker").count('"state": "deferred"') == 2
