"""start_from_trigger per map index from literal partial/expand/expand_kwargs values, from
__init__, and from the class (after tests/integration/test_start_from_trigger.py)."""

from datetime import datetime, timedelta

from airflow.sdk import (
    BaseOperator,
    dag,
)
from airflow.triggers.base import StartTriggerArgs


class Starter(BaseOperator):
    start_trigger_args = StartTriggerArgs(
        trigger_cls="airflow.providers.standard.triggers.temporal.TimeDeltaTrigger",
        trigger_kwargs={"moment": "{{ logical_date.isoformat() }}"},
        next_method="execute_complete")
    start_from_trigger = False

    def __init__(self, *, start_from_trigger=False, trigger_kwargs=None, next_kwargs=None,
                 trigger_timeout=None, **kwargs):
        super().__init__(**kwargs)
        self.start_from_trigger = start_from_trigger
        if trigger_kwargs is not None:
            self.start_trigger_args.trigger_kwargs = trigger_kwargs

    def execute(self, context):
        return "ran on a worker"

    def execute_complete(self, context, event=None):
        return "started in the triggerer"


class OwnStarter(BaseOperator):
    """Gives trigger_kwargs to its class's StartTriggerArgs in __init__, as Airflow's docs do."""

    start_trigger_args = StartTriggerArgs(
        trigger_cls="airflow.providers.standard.triggers.temporal.TimeDeltaTrigger", next_method="execute_complete",
        trigger_kwargs={"delta": timedelta(seconds=30)})
    start_from_trigger = True

    def __init__(self, *, trigger_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        if trigger_kwargs is not None:
            self.start_trigger_args.trigger_kwargs = trigger_kwargs


class Moment(BaseOperator):
    start_trigger_args = StartTriggerArgs(
        trigger_cls="airflow.providers.standard.triggers.temporal.TimeDeltaTrigger", next_method="execute_complete",
        trigger_kwargs={"delta": timedelta(seconds=2)}, next_kwargs={"note": "n"},
        timeout=timedelta(minutes=5))
    start_from_trigger = True

    def __init__(self, *, note=None, **kwargs):
        super().__init__(**kwargs)
        self.note = note

    def execute_complete(self, context, event=None, note=None):
        return event


@dag(dag_id="start_variants", schedule=None, start_date=datetime(2026, 1, 1))
def start_variants():
    Starter.partial(task_id="starter").expand(start_from_trigger=[True, False])
    Starter(task_id="plain")
    Starter(task_id="own_kwargs", start_from_trigger=True, trigger_kwargs=None)
    OwnStarter(task_id="own", trigger_kwargs={"delta": timedelta(seconds=1)})
    Moment(task_id="class_level")
    Moment.partial(task_id="class_mapped").expand(note=["a", "b"])
    Starter.partial(task_id="kw", start_from_trigger=True, trigger_timeout=timedelta(seconds=9)) \
        .expand_kwargs([{"trigger_kwargs": {"moment": "a"}}, {"start_from_trigger": False}])
    Starter.partial(task_id="product", next_kwargs={"k": 1}).expand(
        trigger_kwargs=[{"moment": "x"}, {"moment": "y"}], start_from_trigger=[True, False, True])


start_variants()
