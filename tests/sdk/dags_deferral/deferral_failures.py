"""Triggers that raise, time out, or end the task themselves: Airflow's retry rules apply."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
from airflow.sdk import BaseOperator, BaseSensorOperator, dag, task
from airflow.triggers.base import StartTriggerArgs
from deferral_triggers import EndTrigger, FlakyTrigger, ForeverTrigger


class Flaky(BaseOperator):
    def __init__(self, *, works_from: int, **kwargs):
        super().__init__(**kwargs)
        self.works_from = works_from

    def execute(self, context):
        self.defer(trigger=FlakyTrigger(context["ti"].try_number, self.works_from),
                   method_name="execute_complete")

    def execute_complete(self, context, event=None):
        return {"event": event, "try": context["ti"].try_number}


class Patient(BaseOperator):
    def execute(self, context):
        self.defer(trigger=ForeverTrigger(), method_name="execute_complete",
                   timeout=timedelta(seconds=1))

    def execute_complete(self, context, event=None):
        return "never"


class EndedByTrigger(BaseOperator):
    def __init__(self, *, fail: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.fail = fail

    def execute(self, context):
        self.defer(trigger=EndTrigger(self.fail), method_name="execute_complete")

    def execute_complete(self, context, event=None):
        raise RuntimeError("a worker resumed a task its trigger ended")


class SlowStart(BaseSensorOperator):
    """Starts in the triggerer on a trigger that outlives the start's timeout."""

    start_trigger_args = StartTriggerArgs(
        trigger_cls="deferral_triggers.ForeverTrigger", trigger_kwargs={},
        next_method="execute_complete", next_kwargs=None, timeout=timedelta(seconds=1))
    start_from_trigger = True

    def execute_complete(self, context, event=None):
        return "never"


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     default_args={"retry_delay": timedelta(seconds=0)})
def deferral_failures():
    Flaky(task_id="flaky", works_from=2, retries=1)
    Flaky(task_id="broken", works_from=99, retries=0)
    Patient(task_id="patient", retries=1)
    TimeDeltaSensor(task_id="sensor_timeout", delta=timedelta(hours=1), deferrable=True,
                    timeout=1, retries=2)
    SlowStart(task_id="start_timeout", retries=2)
    ended_ok = EndedByTrigger(task_id="ended_ok")
    EndedByTrigger(task_id="ended_failed", fail=True, retries=1)

    @task
    def after_ended(value: dict) -> int:
        return value["rows"] + 1

    after_ended(ended_ok.output)


deferral_failures()
