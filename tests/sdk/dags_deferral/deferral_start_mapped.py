"""Mapped ``start_from_trigger`` with per-index trigger kwargs, as Airflow's docs write it.

``BaseSensorOperator.execute`` would call ``poke``, which this sensor does not have:
an instance started on a worker instead of the triggerer would fail.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, dag, task
from airflow.triggers.base import StartTriggerArgs


class WaitSecondsSensor(BaseSensorOperator):
    start_trigger_args = StartTriggerArgs(
        trigger_cls="airflow.providers.standard.triggers.temporal.TimeDeltaTrigger",
        trigger_kwargs={"delta": timedelta(seconds=30)},
        next_method="execute_complete",
        next_kwargs=None,
        timeout=None,
    )
    start_from_trigger = True

    def __init__(self, *args: Any, trigger_kwargs: dict[str, Any] | None,
                 start_from_trigger: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.start_trigger_args.trigger_kwargs = trigger_kwargs
        self.start_from_trigger = start_from_trigger

    def execute_complete(self, context: Context, event: Any = None) -> dict:
        return {"fired_at": event.isoformat(), "try": context["ti"].try_number}


class Starter(WaitSecondsSensor):
    """Starts in the triggerer or on a worker, as its map index says."""

    def poke(self, context: Context) -> bool:
        return True


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def deferral_start_mapped():
    waits = WaitSecondsSensor.partial(task_id="wait", start_from_trigger=True).expand(
        trigger_kwargs=[{"delta": timedelta(seconds=s)} for s in (1, 2, 3)])
    Starter.partial(task_id="mixed").expand_kwargs([
        {"start_from_trigger": True, "trigger_kwargs": {"delta": timedelta(seconds=1)}},
        {"start_from_trigger": False, "trigger_kwargs": None},
    ])

    @task
    def done(results) -> int:
        return len(results)

    done(waits.output)


deferral_start_mapped()
