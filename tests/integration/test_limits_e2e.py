"""Concurrency limits through the real daemons: what runs at the same time."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from tests.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(240)
PARSE_TIMEOUT_S = 90.0  # the daemons import Airflow before their first parse


async def worker_ready(cluster: Cluster) -> None:
    async def ready():
        return '"worker_ready"' in cluster.log("worker")

    await wait_for(ready, PARSE_TIMEOUT_S, "the worker to be ready")


def overlaps(intervals: list[tuple]) -> int:
    """The most intervals open at one moment."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                   key=lambda e: (e[0], e[1]))
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


async def test_max_active_tis_per_dagrun_runs_one_instance_at_a_time_in_each_run(cluster: Cluster):
    cluster.write_dag("serial.py", """
        import time
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1), max_active_runs=2)
        def serial():
            @task(max_active_tis_per_dagrun=1)
            def slow(x):
                time.sleep(0.3)
                return x
            slow.expand(x=[1, 2, 3])
        serial()
    """)
    cluster.start("scheduler")
    await cluster.wait_dag("serial", timeout=PARSE_TIMEOUT_S)
    run_ids = [await cluster.trigger("serial") for _ in range(2)]
    cluster.start("worker", SLUICE_WORKER_CONCURRENCY="8")  # both runs are waiting for it
    docs = [await cluster.wait_run(run_id, 120) for run_id in run_ids]
    conn = await cluster.connect()
    try:
        rows = await conn.fetch(
            "SELECT r.run_id, ti.start_date, ti.end_date FROM task_instance ti"
            " JOIN dag_run r ON r.id = ti.run_pk WHERE ti.task_id = 'slow'")
    finally:
        await conn.close()
    assert [d["state"] for d in docs] == ["success", "success"]
    for run_id in run_ids:
        assert overlaps([(r["start_date"], r["end_date"]) for r in rows
                         if r["run_id"] == run_id]) == 1
    # the limit is per run: the two runs did run side by side
    assert overlaps([(r["start_date"], r["end_date"]) for r in rows]) == 2


async def test_dagrun_timeout_fails_the_run_skips_what_had_not_finished_and_stops_it(
        cluster: Cluster, tmp_path):
    pid_file = tmp_path / "slow.pid"
    cluster.write_dag("slow_run.py", f"""
        import os, time
        from datetime import datetime, timedelta
        from pathlib import Path
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1), dagrun_timeout=timedelta(seconds=4))
        def slow_run():
            @task
            def quick():
                return 1
            @task
            def slow(x):
                Path({str(pid_file)!r}).write_text(str(os.getpid()))
                time.sleep(60)
            @task
            def after(x):
                return x
            after(slow(quick()))
        slow_run()
    """)
    cluster.start_all()
    await cluster.wait_dag("slow_run", timeout=PARSE_TIMEOUT_S)
    await worker_ready(cluster)  # the deadline counts from the run's start
    doc = await cluster.wait_run(await cluster.trigger("slow_run"), 30)
    states = {t["task_id"]: t["state"] for t in doc["tasks"]}
    assert (doc["state"], states) == (
        "failed", {"quick": "success", "slow": "skipped", "after": "skipped"})
    elapsed = (datetime.fromisoformat(doc["end_date"])
               - datetime.fromisoformat(doc["start_date"])).total_seconds()
    assert 4 <= elapsed < 7, elapsed  # at its deadline, not at the repair sweep
    body_pid = int(pid_file.read_text())

    async def body_stopped():
        return not Path(f"/proc/{body_pid}").exists() and "task_killed" in cluster.log("worker")

    await wait_for(body_stopped, 15, "the skipped task's body to be stopped")
    assert cluster.by_task(await cluster.run_doc(doc["run_id"]))["slow"]["state"] == "skipped"
