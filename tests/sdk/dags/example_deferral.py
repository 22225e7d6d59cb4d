"""A deferrable operator: it sleeps in the triggerer, not in a worker slot."""

from datetime import datetime, timedelta

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import (
    BaseOperator,
    dag,
    task,
)


class WaitThenReport(BaseOperator):
    """Defers for ``seconds`` to the triggerer, then resumes in ``execute_complete``."""

    def __init__(self, *, seconds: float, **kwargs):
        super().__init__(**kwargs)
        self.seconds = seconds

    def execute(self, context):
        self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=self.seconds)),
                   method_name="execute_complete", kwargs={"asked": self.seconds})

    def execute_complete(self, context, event=None, asked=None):
        return {"waited_s": asked, "fired_at": event.isoformat() if event else None}


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["example"])
def deferral_example():
    waited = WaitThenReport(task_id="wait", seconds=2)

    @task
    def report(result: dict) -> str:
        return f"waited {result['waited_s']}s"

    report(waited.output)


deferral_example()
