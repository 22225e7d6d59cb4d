"""Airflow's own Python client (``apache-airflow-client``) against ``sluice api-server``.

The three daemons and the api-server run as real processes; the client lists
DAGs, triggers a run with conf, waits for it, lists the mapped instances and
reads a mapped instance's log, as a script written for Airflow would.
"""

from __future__ import annotations

import anyio
import pytest
from airflow_client import client as af

from tests.api_server import login, start_api_server
from tests.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(120)

DAG = """
    from datetime import datetime
    from airflow.sdk import dag, task

    @dag(schedule=None, start_date=datetime(2026, 1, 1), tags=["api"])
    def api_mapped():
        @task
        def numbers(**context):
            return list(range(context["dag_run"].conf["n"]))

        @task(map_index_template="{{ task.op_kwargs['x'] }}")
        def double(x):
            print(f"doubling {x}")
            return x * 2

        double.expand(x=numbers())
    api_mapped()
"""


async def test_airflow_client_lists_triggers_waits_lists_mapped_and_reads_a_log(cluster: Cluster):
    cluster.write_dag("api_mapped.py", DAG)
    cluster.start_all()
    base = await start_api_server(cluster, {"admin": ("admin", "s3cret-admin")})
    await cluster.wait_dag("api_mapped", timeout=120)  # the scheduler imports Airflow first
    token = await anyio.to_thread.run_sync(login, base, "admin", "s3cret-admin")
    api = af.ApiClient(af.Configuration(host=base, access_token=token))

    dags = af.DAGApi(api).get_dags(tags=["api"])
    assert [d.dag_id for d in dags.dags] == ["api_mapped"] and dags.total_entries == 1
    assert dags.dags[0].is_paused is False and dags.dags[0].tags[0].name == "api"

    runs = af.DagRunApi(api)
    run = runs.trigger_dag_run("api_mapped", af.TriggerDAGRunPostBody(
        logical_date=None, conf={"n": 3}))
    assert run.conf == {"n": 3} and run.run_type.value == "manual"

    async def finished():
        found = await anyio.to_thread.run_sync(runs.get_dag_run, "api_mapped", run.dag_run_id)
        return found if found.state.value in ("success", "failed") else None

    done = await wait_for(finished, 120, "the run to finish")
    assert done.state.value == "success", cluster.log("worker")

    tis = af.TaskInstanceApi(api)
    mapped = tis.get_mapped_task_instances("api_mapped", run.dag_run_id, "double")
    assert mapped.total_entries == 3
    assert [(t.map_index, t.state.value, t.rendered_map_index, t.try_number)
            for t in mapped.task_instances] == [(0, "success", "0", 1), (1, "success", "1", 1),
                                                (2, "success", "2", 1)]
    log = tis.get_log("api_mapped", run.dag_run_id, "double", 1, map_index=2)
    events = [m.event for m in log.content.actual_instance]
    assert "doubling 2" in events, events
