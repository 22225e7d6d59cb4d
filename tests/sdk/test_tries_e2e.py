"""Every try of an instance is kept: ``task_instance_history`` and the api-server's
``.../tries`` routes, through real daemons running an Airflow DAG file, answered in
Airflow's schema."""

from __future__ import annotations

import json
from urllib.parse import quote

import anyio
import pytest

from tests.api_server import call, login, start_api_server
from tests.cluster import Cluster
from tests.sdk.test_api_openapi import Airflow

FLAKY = """
    from datetime import datetime
    from pathlib import Path
    from airflow.sdk import dag, task

    @dag(schedule=None, start_date=datetime(2026, 1, 1))
    def flaky():
        @task(retries=2, retry_delay=0)
        def third_time_lucky():
            tries = Path({counter!r})
            tries.write_text(tries.read_text() + "x" if tries.exists() else "x")
            if len(tries.read_text()) < 3:
                raise RuntimeError("not yet")
            return len(tries.read_text())
        third_time_lucky()
    flaky()
"""
pytestmark = pytest.mark.timeout(180)
TRIES = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/tries"


async def _get(base: str, token: str, path: str) -> tuple[int, object]:
    return await anyio.to_thread.run_sync(lambda: call(f"{base}/api/v2{path}", token=token))


async def _get_ui(base: str, token: str, path: str) -> tuple[int, object]:
    return await anyio.to_thread.run_sync(lambda: call(base + path, token=token))


async def _tries(airflow: Airflow, base: str, token: str, run_id: str) -> list[tuple]:
    """``/tries`` and ``/-1/tries`` of the instance, validated: (try_number, state) pairs."""
    path = f"/dags/flaky/dagRuns/{quote(run_id)}/taskInstances/third_time_lucky"
    status, body = await _get(base, token, path + "/tries")
    assert status == 200, body
    airflow.validate("get", "/api/v2" + TRIES, 200, body)
    assert body["total_entries"] == len(body["task_instances"])
    status, mapped = await _get(base, token, path + "/-1/tries")
    assert (status, mapped) == (200, body)
    return [(t["try_number"], t["state"]) for t in body["task_instances"]]


async def test_every_try_is_listed_and_a_clear_keeps_them(cluster: Cluster, tmp_path):
    cluster.write_dag("flaky.py", FLAKY.format(counter=str(tmp_path / "tries")))
    cluster.env.pop("AIRFLOW_HOME", None)  # the daemons' own: $SLUICE_HOME/airflow
    cluster.start("scheduler")
    cluster.start("worker")
    base = await start_api_server(cluster, {"admin": ("admin", "pw")})
    token = await anyio.to_thread.run_sync(login, base, "admin", "pw")
    airflow = Airflow()
    run_id = await cluster.trigger("flaky")
    assert (await cluster.wait_run(run_id))["state"] == "success"
    assert await _tries(airflow, base, token, run_id) == [
        (1, "failed"), (2, "failed"), (3, "success")]

    path = f"/dags/flaky/dagRuns/{quote(run_id)}/taskInstances/third_time_lucky/tries"
    status, first = await _get(base, token, path + "/1")
    assert status == 200, first
    airflow.validate("get", "/api/v2" + TRIES + "/{task_try_number}", 200, first)
    assert (first["try_number"], first["state"], first["max_tries"]) == (1, "failed", 2)
    assert first["start_date"] is not None and first["end_date"] is not None
    status, missing = await _get(base, token, path + "/7")
    assert status == 404 and "Try 7 of task 'third_time_lucky'" in missing["detail"]

    out = cluster.cli("runs", "clear", run_id, "--wait", "--json", timeout=90)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"] == "success"
    assert await _tries(airflow, base, token, run_id) == [
        (1, "failed"), (2, "failed"), (3, "success"), (4, "success")]

    status, page = await _get_ui(base, token, f"/ui/api/dags/flaky/runs/{quote(run_id)}"
                                              "/tasks/third_time_lucky/-1")
    assert status == 200, page
    assert [(t["try_number"], t["state"]) for t in page["tries"]] == [
        (1, "up_for_retry"), (2, "up_for_retry"), (3, "success")]
    assert page["tries"][0]["start_date"] and page["instance"]["try_number"] == 4
