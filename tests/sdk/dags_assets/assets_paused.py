"""A consumer that starts paused: the producer's events are kept, not queued for it."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Asset, task

snapshots = Asset("paused_snapshots", uri="file:///data/snapshots")

with DAG("paused_producer", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, is_paused_upon_creation=False):

    @task(outlets=[snapshots])
    def snapshot(*, outlet_events, dag_run):
        outlet_events[snapshots].extra = {"run": dag_run.run_id}

    snapshot()


with DAG("paused_consumer", schedule=[snapshots], start_date=datetime(2026, 1, 1),
         catchup=False, is_paused_upon_creation=True):

    @task
    def seen(*, triggering_asset_events):
        return [e.extra["run"] for e in triggering_asset_events[snapshots]]

    seen()
