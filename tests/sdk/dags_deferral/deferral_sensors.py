"""Deferrable sensors of the standard provider, as Airflow's docs use them."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
from airflow.sdk import dag, task

SOON = "{{ (logical_date + macros.timedelta(seconds=2)).isoformat() }}"  # 2 s into the run


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def deferral_sensors():
    wait_until = DateTimeSensorAsync(task_id="wait_until", target_time=SOON)
    wait_delta = TimeDeltaSensor(task_id="wait_delta", delta=timedelta(seconds=2),
                                 deferrable=True)
    from_trigger = DateTimeSensorAsync(task_id="from_trigger", target_time=SOON,
                                       start_from_trigger=True)
    ended_in_trigger = DateTimeSensorAsync(task_id="ended_in_trigger", target_time=SOON,
                                           end_from_trigger=True)

    @task
    def after() -> str:
        return "every sensor passed"

    [wait_until, wait_delta, from_trigger, ended_in_trigger] >> after()


deferral_sensors()
