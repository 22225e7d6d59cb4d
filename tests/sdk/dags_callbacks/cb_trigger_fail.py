"""A try its trigger ends with a TaskFailedEvent: no task process ran the end, the
scheduler runs the task's on_failure_callback."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from airflow.sdk import BaseOperator, dag
from airflow.triggers.base import BaseTrigger, TaskFailedEvent

OUT = Path(__file__).resolve().parent.parent / "out"


class FailNow(BaseTrigger):
    def serialize(self):
        return ("cb_trigger_fail.FailNow", {})

    async def run(self):
        yield TaskFailedEvent()


class DeferToFailure(BaseOperator):
    def execute(self, context):
        self.defer(trigger=FailNow(), method_name="never")

    def never(self, context, event=None):
        raise AssertionError("the trigger ends the task: this never runs")


def trigger_failure(context):
    ti = context["ti"]
    line = {"task_id": ti.task_id, "try_number": ti.try_number, "run_id": context["run_id"]}
    with open(OUT / "trigger_failure.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")


@dag(schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
def cb_trigger_fail():
    DeferToFailure(task_id="deferred", retries=0, on_failure_callback=trigger_failure)


cb_trigger_fail()
