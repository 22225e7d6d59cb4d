"""``start_from_trigger`` for mapped operators, through the real daemons."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from tests.cluster import Cluster, own_cluster, wait_for

pytestmark = pytest.mark.timeout(240)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "dags"
PARSE_TIMEOUT_S = 90.0  # the daemons import Airflow before their first parse
RUN_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
async def daemons(services, template_db, tmp_path_factory):
    """One scheduler, triggerer and worker for the module's runs; each test writes its DAG."""
    async with own_cluster(services, template_db, tmp_path_factory.mktemp("start_from_trigger"),
                           name="start") as c:
        c.start_all()
        yield c


async def run(cluster: Cluster, dag_id: str) -> dict:
    """Trigger ``dag_id`` once parsed and the worker is up (a trigger's wait counts from the
    run's start) and wait for the run's end."""
    async def worker_ready():
        return '"worker_ready"' in cluster.log("worker")

    await wait_for(worker_ready, PARSE_TIMEOUT_S, "the worker to be ready")
    await cluster.wait_dag(dag_id, timeout=PARSE_TIMEOUT_S)
    return await cluster.wait_run(await cluster.trigger(dag_id), RUN_TIMEOUT_S)


def worker_starts(cluster: Cluster, dag_id: str, task_id: str) -> dict[int, list[datetime]]:
    starts: dict[int, list[datetime]] = {}
    for line in cluster.log("worker").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "task_started" and (event.get("dag_id"), event.get("task_id")) \
                == (dag_id, task_id):
            ts = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
            starts.setdefault(event["map_index"], []).append(ts)
    return starts


async def test_mapped_per_index_trigger_kwargs_start_without_a_worker(daemons: Cluster):
    cluster = daemons
    shutil.copy(EXAMPLES / "wait_seconds_mapped.py", cluster.dags_folder)
    doc = await run(cluster, "wait_seconds_mapped")
    assert doc["state"] == "success"
    run_start = datetime.fromisoformat(doc["start_date"])
    waits = [t for t in doc["tasks"] if t["task_id"] == "wait"]
    assert [t["try_number"] for t in waits] == [1, 1, 1]
    starts = worker_starts(cluster, "wait_seconds_mapped", "wait")
    for t, seconds in zip(waits, (1, 2, 3), strict=True):
        fired = datetime.fromisoformat(t["return_value"]["fired_at"])
        assert (fired - run_start).total_seconds() >= seconds - 0.05, t
        # exactly one worker start per instance, and only after its trigger fired
        assert len(starts[t["map_index"]]) == 1
        assert starts[t["map_index"]][0] >= fired
    done = next(t for t in doc["tasks"] if t["task_id"] == "done")
    assert done["return_value"] == 3


async def test_mixed_start_from_trigger_and_templated_kwargs(daemons: Cluster):
    cluster = daemons
    cluster.write_dag("mixed_triggers.py", """
        from datetime import datetime
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        class IsoMomentTrigger(DateTimeTrigger):
            \"\"\"Fires at ``moment``, given as an ISO string (a rendered template).\"\"\"

            def __init__(self, moment, **kwargs):
                super().__init__(datetime.fromisoformat(moment) if isinstance(moment, str)
                                 else moment, **kwargs)
    """)
    cluster.write_dag("mixed.py", """
        from datetime import datetime
        from airflow.sdk import BaseOperator, dag
        from airflow.triggers.base import StartTriggerArgs

        class Starter(BaseOperator):
            start_trigger_args = StartTriggerArgs(
                trigger_cls="mixed_triggers.IsoMomentTrigger",
                trigger_kwargs={"moment": "{{ logical_date.isoformat() }}"},
                next_method="execute_complete", next_kwargs=None, timeout=None)
            start_from_trigger = False

            def __init__(self, *, start_from_trigger=False, **kwargs):
                super().__init__(**kwargs)
                self.start_from_trigger = start_from_trigger

            def execute(self, context):
                return "ran on a worker"

            def execute_complete(self, context, event=None):
                return "started in the triggerer"

        class Moment(BaseOperator):
            start_trigger_args = StartTriggerArgs(
                trigger_cls="mixed_triggers.IsoMomentTrigger", next_method="execute_complete",
                trigger_kwargs={"moment": "{{ logical_date.isoformat() }}"}, next_kwargs=None,
                timeout=None)
            start_from_trigger = True

            def execute_complete(self, context, event=None):
                return event.isoformat()

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def mixed():
            Starter.partial(task_id="starter").expand(start_from_trigger=[True, False])
            Starter(task_id="plain")
            Moment(task_id="class_level")
        mixed()
    """)
    doc = await run(cluster, "mixed")
    assert doc["state"] == "success", doc
    values = {(t["task_id"], t["map_index"]): t["return_value"] for t in doc["tasks"]}
    assert values[("starter", 0)] == "started in the triggerer"
    assert values[("starter", 1)] == "ran on a worker"
    assert values[("plain", -1)] == "ran on a worker"
    # the scheduler rendered the moment from the run's context
    assert values[("class_level", -1)] == doc["run_id"].removeprefix("manual__")
    fired = {(e["task_id"], e["map_index"]) for e in map(json.loads, filter(
        lambda line: line.startswith("{"), cluster.log("triggerer").splitlines()))
        if e.get("event") == "trigger_fired" and e.get("dag_id") == "mixed"}
    assert fired == {("starter", 0), ("class_level", -1)}


async def test_upstream_reference_for_start_from_trigger_is_refused(cluster: Cluster):
    cluster.write_dag("refused.py", """
        from datetime import datetime
        from airflow.sdk import BaseOperator, dag, task
        from airflow.triggers.base import StartTriggerArgs

        class Starter(BaseOperator):
            start_trigger_args = StartTriggerArgs(
                trigger_cls="airflow.providers.standard.triggers.temporal.DateTimeTrigger",
                trigger_kwargs={}, next_method="execute_complete", next_kwargs=None,
                timeout=None)
            def __init__(self, *, trigger_kwargs=None, **kwargs):
                super().__init__(**kwargs)

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def refused():
            @task
            def kwargs_list():
                return [{"moment": "2026-01-01T00:00:00+00:00"}]
            Starter.partial(task_id="s").expand(trigger_kwargs=kwargs_list())
        refused()
    """)
    cluster.start("scheduler")
    conn = await cluster.connect()
    try:
        async def error():
            return await conn.fetchval("SELECT message FROM import_error")

        message = await wait_for(error, PARSE_TIMEOUT_S, "the import error")
    finally:
        await conn.close()
    assert "refused.py" in message and "task 's': trigger_kwargs" in message
    assert "never reads task outputs" in message
