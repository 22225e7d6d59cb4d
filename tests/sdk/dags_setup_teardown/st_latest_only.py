"""``LatestOnlyOperator`` unmodified: catch-up runs skip what follows it, the latest runs it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.latest_only import LatestOnlyOperator
from airflow.sdk import DAG, task

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@task
def notify():
    return "latest"


# Airflow 3's "@daily" is a CronTriggerTimetable: runs at 00:00 of each day from the
# start date, today's included (four runs), each a point-in-time data interval
with DAG("st_latest_only", schedule="@daily", start_date=TODAY - timedelta(days=3),
         catchup=True):
    latest = LatestOnlyOperator(task_id="latest_only")
    latest >> notify() >> EmptyOperator(task_id="tail")

with DAG("st_latest_only_manual", schedule=None, start_date=datetime(2026, 1, 1)):
    LatestOnlyOperator(task_id="latest_only") >> notify()
