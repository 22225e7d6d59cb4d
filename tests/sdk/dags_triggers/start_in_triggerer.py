"""A task started in the triggerer with a DAG-folder trigger and per-index kwargs."""

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, BaseOperator
from airflow.triggers.base import StartTriggerArgs


class Echo(BaseOperator):
    start_trigger_args = StartTriggerArgs(
        trigger_cls="custom_triggers.EchoTrigger", next_method="execute_complete",
        trigger_kwargs={"label": "{{ run_id }}", "delay": timedelta(milliseconds=50),
                        "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)},
        next_kwargs={"note": "n", "since": datetime(2026, 1, 1, tzinfo=UTC)})
    start_from_trigger = True

    def __init__(self, *, trigger_kwargs=None, **kwargs):
        super().__init__(**kwargs)

    def execute_complete(self, context, event=None, note=None, since=None):
        return {"event": event, "note": note, "since": since}


with DAG(dag_id="start_in_triggerer", schedule=None, start_date=datetime(2026, 1, 1)):
    Echo.partial(task_id="echo").expand(trigger_kwargs=[
        {"label": "zero {{ map_index }}", "delay": timedelta(milliseconds=20)},
        {"label": "one", "delay": timedelta(milliseconds=30),
         "when": datetime(2027, 5, 6, tzinfo=UTC)},
    ])
