"""``start_from_trigger`` for mapped operators, through the real daemons."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from tests.cluster import Cluster

pytestmark = pytest.mark.timeout(120)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "dags"


def worker_starts(cluster: Cluster, task_id: str) -> dict[int, list[datetime]]:
    starts: dict[int, list[datetime]] = {}
    for line in cluster.log("worker").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "task_started" and event.get("task_id") == task_id:
            ts = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
            starts.setdefault(event["map_index"], []).append(ts)
    return starts


async def test_mapped_per_index_trigger_kwargs_start_without_a_worker(cluster: Cluster):
    shutil.copy(EXAMPLES / "wait_seconds_mapped.py", cluster.dags_folder)
    cluster.start_all()
    doc = await cluster.wait_run(await cluster.trigger("wait_seconds_mapped"))
    assert doc["state"] == "success"
    run_start = datetime.fromisoformat(doc["start_date"])
    waits = [t for t in doc["tasks"] if t["task_id"] == "wait"]
    assert [t["try_number"] for t in waits] == [1, 1, 1]
    starts = worker_starts(cluster, "wait")
    for t, seconds in zip(waits, (1, 2, 3), strict=True):
        fired = datetime.fromisoformat(t["return_value"]["fired_at"])
        assert (fired - run_start).total_seconds() >= seconds - 0.05, t
        # exactly one worker start per instance, and only after its trigger fired
        assert len(starts[t["map_index"]]) == 1
        assert starts[t["map_index"]][0] >= fired
    done = next(t for t in doc["tasks"] if t["task_id"] == "done")
    assert done["return_value"] == 3


async def test_mixed_start_from_trigger_and_templated_kwargs(cluster: Cluster):
    cluster.write_dag("mixed.py", """
        from datetime import datetime, timedelta
        from shared.sdk import BaseOperator, StartTriggerArgs, dag

        class Starter(BaseOperator):
            start_trigger_args = StartTriggerArgs(
                trigger_cls="shared.sdk.triggers.DateTimeTrigger",
                trigger_kwargs={"moment": "{{ logical_date.isoformat() }}"},
                next_method="execute_complete")
            start_from_trigger = False

            def __init__(self, *, start_from_trigger=False, trigger_kwargs=None, **kwargs):
                super().__init__(**kwargs)
                self.start_from_trigger = start_from_trigger
                if trigger_kwargs is not None:
                    self.start_trigger_args.trigger_kwargs = trigger_kwargs

            def execute(self, context):
                return "ran on a worker"

            def execute_complete(self, context, event=None):
                return "started in the triggerer"

        class Moment(BaseOperator):
            start_trigger_args = StartTriggerArgs(
                trigger_cls="mixed.IsoMomentTrigger", next_method="execute_complete",
                trigger_kwargs={"moment": "{{ logical_date.isoformat() }}"})
            start_from_trigger = True

            def execute_complete(self, context, event=None):
                return event

        from shared.sdk.triggers import DateTimeTrigger

        class IsoMomentTrigger(DateTimeTrigger):
            def __init__(self, moment, **kwargs):
                super().__init__(datetime.fromisoformat(moment) if isinstance(moment, str) else moment)

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def mixed():
            Starter.partial(task_id="starter").expand(start_from_trigger=[True, False])
            Starter(task_id="plain")
            Moment(task_id="class_level")
        mixed()
    """)
    cluster.write_dag("mixed.py", cluster.dags_folder.joinpath("mixed.py").read_text().replace(
        'trigger_cls="shared.sdk.triggers.DateTimeTrigger"', 'trigger_cls="mixed.IsoMomentTrigger"'))
    cluster.start_all()
    doc = await cluster.wait_run(await cluster.trigger("mixed"))
    assert doc["state"] == "success", doc
    values = {(t["task_id"], t["map_index"]): t["return_value"] for t in doc["tasks"]}
    assert values[("starter", 0)] == "started in the triggerer"
    assert values[("starter", 1)] == "ran on a worker"
    assert values[("plain", -1)] == "ran on a worker"
    assert values[("class_level", -1)] == doc["run_id"].removeprefix("manual__")


async def test_upstream_reference_for_start_from_trigger_is_refused(cluster: Cluster):
    cluster.write_dag("refused.py", """
        from datetime import datetime
        from shared.sdk import BaseOperator, StartTriggerArgs, dag, task

        class Starter(BaseOperator):
            start_trigger_args = StartTriggerArgs(
                trigger_cls="shared.sdk.triggers.DateTimeTrigger", next_method="execute_complete")
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
        from tests.cluster import wait_for

        async def error():
            return await conn.fetchval("SELECT message FROM import_error")

        message = await wait_for(error, 30, "the import error")
    finally:
        await conn.close()
    assert "refused.py" in message and "task 's': trigger_kwargs" in message
    assert "never reads task outputs" in message
