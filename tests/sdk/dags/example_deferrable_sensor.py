"""A deferrable sensor: waits in the triggerer until a moment after the run's date."""

from datetime import datetime, timedelta

from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
from airflow.sdk import (
    dag,
    task,
)


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["example", "deferral"])
def deferrable_sensor():
    wait = TimeDeltaSensor(task_id="wait_two_seconds", delta=timedelta(seconds=2),
                           deferrable=True, timeout=60)

    @task
    def after() -> str:
        return "the moment has passed"

    wait >> after()


deferrable_sensor()
