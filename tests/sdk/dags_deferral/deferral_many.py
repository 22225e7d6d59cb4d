"""Many mapped instances deferring at once: each defers ``params.seconds`` from its worker
and resumes there."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import BaseOperator, Param, dag


class Nap(BaseOperator):
    def __init__(self, *, n: int, **kwargs):
        super().__init__(**kwargs)
        self.n = n

    def execute(self, context):
        seconds = float(context["params"]["seconds"])
        self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=seconds)),
                   method_name="execute_complete")

    def execute_complete(self, context, event=None):
        return self.n


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, max_active_tasks=1024,
     params={"seconds": Param(2.0, type="number")})
def deferral_many():
    Nap.partial(task_id="nap", max_active_tis_per_dag=1024).expand(n=list(range(200)))


deferral_many()
