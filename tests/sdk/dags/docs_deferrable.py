"""A deferrable sensor written the way Airflow's "Deferrable Operators & Triggers"
docs write one (our own code): ``Context`` annotations imported at run time, and
``start_from_trigger``/``trigger_kwargs`` chosen per instance in ``__init__``.
"""

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import (
    BaseSensorOperator,
    Context,
    dag,
)
from airflow.triggers.base import StartTriggerArgs


class WaitSensor(BaseSensorOperator):
    start_trigger_args = StartTriggerArgs(
        trigger_cls="airflow.providers.standard.triggers.temporal.TimeDeltaTrigger",
        trigger_kwargs={"delta": timedelta(seconds=30)},
        next_method="execute_complete",
        next_kwargs=None,
        timeout=None,
    )
    start_from_trigger = True

    def __init__(self, *args: Any, trigger_kwargs: dict[str, Any] | None = None,
                 start_from_trigger: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if trigger_kwargs is not None:
            self.start_trigger_args.trigger_kwargs = trigger_kwargs
        self.start_from_trigger = start_from_trigger

    def execute(self, context: Context) -> None:
        self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=1)), method_name="execute_complete")

    def execute_complete(self, context: Context, event: Any = None) -> str:
        return f"{context['ti'].task_id} resumed, event is a datetime: {isinstance(event, datetime)}"


@dag(dag_id="docs_deferrable", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def docs_deferrable():
    WaitSensor(task_id="from_trigger", trigger_kwargs={"delta": timedelta(seconds=1)})
    WaitSensor(task_id="from_worker", start_from_trigger=False)


docs_deferrable()
