"""``AssetOrTimeSchedule``: a yearly cron, or as soon as the asset is updated."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, task

ticks = Asset("or_time_ticks", uri="file:///data/ticks")

with DAG("or_time_producer", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, is_paused_upon_creation=False):

    @task(outlets=[ticks])
    def tick():
        return "tick"

    tick()


with DAG("or_time_consumer", start_date=datetime(2026, 1, 1), catchup=False, is_paused_upon_creation=False,
         schedule=AssetOrTimeSchedule(
             timetable=CronTriggerTimetable("0 3 1 1 *", timezone="UTC"), assets=[ticks])):

    @task
    def which(*, dag_run, triggering_asset_events):
        return [str(getattr(dag_run.run_type, "value", dag_run.run_type)),
                [key.name for key in triggering_asset_events]]

    which()
