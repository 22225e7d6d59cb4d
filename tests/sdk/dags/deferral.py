"""Deferral: a custom trigger defined in this file, Airflow's TimeDeltaTrigger through
self.defer, and an operator that starts straight from a trigger (start_from_trigger).
"""

import asyncio
from datetime import datetime, timedelta

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import (
    BaseOperator,
    dag,
    task,
)
from airflow.triggers.base import BaseTrigger, StartTriggerArgs, TriggerEvent


class CountdownTrigger(BaseTrigger):
    """Counts down from ``start`` in the triggerer, then fires with what it saw."""

    def __init__(self, start, step=1):
        super().__init__()
        self.start = start
        self.step = step

    def serialize(self):
        return ("deferral.CountdownTrigger", {"start": self.start, "step": self.step})

    async def run(self):
        seen = []
        n = self.start
        while n > 0:
            seen.append(n)
            n -= self.step
            await asyncio.sleep(0.05)
        # rebuilt in the triggerer from serialize()'s class path: this file, imported by name
        yield TriggerEvent({"seen": seen, "by_class_path": type(self).__module__ == "deferral"})


class CountdownOperator(BaseOperator):
    template_fields = ("start",)

    def __init__(self, *, start, **kwargs):
        super().__init__(**kwargs)
        self.start = start

    def execute(self, context):
        self.defer(trigger=CountdownTrigger(start=self.start), method_name="execute_complete",
                   kwargs={"asked": self.start}, timeout=timedelta(seconds=60))

    def execute_complete(self, context, event=None, asked=None):
        return {"asked": asked, "seen": event["seen"], "by_class_path": event["by_class_path"]}


class WaitABit(BaseOperator):
    def execute(self, context):
        self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=1)), method_name="resume")

    def resume(self, context, event=None):
        return {"resumed": True, "event_is_datetime": isinstance(event, datetime)}


class StartsInTriggerer(BaseOperator):
    start_trigger_args = StartTriggerArgs(
        trigger_cls="airflow.providers.standard.triggers.temporal.TimeDeltaTrigger",
        trigger_kwargs={"delta": timedelta(seconds=1)},
        next_method="execute_complete",
        next_kwargs={"note": "from the triggerer"},
        timeout=None,
    )
    start_from_trigger = True

    def execute(self, context):
        return "ran on a worker: start_from_trigger was ignored"

    def execute_complete(self, context, event=None, note=None):
        return {"note": note, "event_is_datetime": isinstance(event, datetime)}


@dag(dag_id="deferral", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def deferral():
    one = CountdownOperator(task_id="countdown_one", start=2)
    many = CountdownOperator.partial(task_id="countdown_many").expand(start=[1, 3])
    waited = WaitABit(task_id="wait_a_bit")
    started = StartsInTriggerer(task_id="starts_in_triggerer")

    @task
    def summarize(one, many, waited, started):
        return {"one": one["seen"], "many": [m["seen"] for m in many],
                "waited": waited["resumed"], "started": started["note"]}

    summarize(one.output, many.output, waited.output, started.output)


deferral()
