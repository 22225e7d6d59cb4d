"""Mapped ``start_from_trigger``: each instance waits in the triggerer, no worker until it fires.

The scheduler reads ``trigger_kwargs`` for each map index from the literal
``expand`` values and starts every instance straight in the triggerer, each
with its own duration. A worker only runs ``execute_complete`` afterwards.
"""

from datetime import datetime, timedelta

from airflow.sdk import (
    BaseSensorOperator,
    dag,
    task,
)
from airflow.triggers.base import StartTriggerArgs


class WaitSecondsSensor(BaseSensorOperator):
    """Waits ``trigger_kwargs["delta"]`` in the triggerer, then succeeds."""

    start_trigger_args = StartTriggerArgs(
        trigger_cls="airflow.providers.standard.triggers.temporal.TimeDeltaTrigger",
        trigger_kwargs={"delta": timedelta(seconds=1)},
        next_method="execute_complete",
        next_kwargs=None,
        timeout=None,
    )
    start_from_trigger = True

    def __init__(self, *, trigger_kwargs: dict | None = None, start_from_trigger: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.start_trigger_args.trigger_kwargs = trigger_kwargs
        self.start_from_trigger = start_from_trigger

    def poke(self, context) -> bool:
        return True  # started on a worker (start_from_trigger=False): nothing to wait for

    def execute_complete(self, context, event=None):
        return {"fired_at": event.isoformat() if event else None}


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["example", "deferral"])
def wait_seconds_mapped():
    waits = WaitSecondsSensor.partial(task_id="wait").expand(
        trigger_kwargs=[{"delta": timedelta(seconds=s)} for s in (1, 2, 3)])

    @task
    def done(results) -> int:
        return len(results)

    done(waits.output)


wait_seconds_mapped()
