"""A deferring operator with a trigger from the DAG folder; ``execute_complete`` returns what
it made of the event, and a downstream task reads it."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import BaseOperator, dag, task
from deferral_triggers import EchoTrigger


class WaitForEcho(BaseOperator):
    template_fields = ("greeting",)

    def __init__(self, *, greeting: str, seconds: float, **kwargs):
        super().__init__(**kwargs)
        self.greeting, self.seconds = greeting, seconds

    def execute(self, context):
        self.log.info("deferring for %s s", self.seconds)
        self.defer(trigger=EchoTrigger(self.greeting, timedelta(seconds=self.seconds)),
                   method_name="execute_complete", kwargs={"asked": self.seconds})

    def execute_complete(self, context, event=None, asked=None):
        self.log.info("resumed with %s", event["label"])
        return {"label": event["label"].upper(), "asked": asked,
                "waited_s": event["waited"].total_seconds(), "pair": list(event["pair"]),
                "fired_at": event["fired_at"].isoformat(), "try": context["ti"].try_number}


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def deferral_custom():
    echoed = WaitForEcho(task_id="echo", greeting="hello {{ dag_run.dag_id }}", seconds=1)

    @task
    def report(result: dict) -> str:
        return f"{result['label']} after {result['waited_s']}s"

    report(echoed.output)


deferral_custom()
