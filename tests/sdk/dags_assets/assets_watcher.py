"""Event-driven scheduling, as Airflow's docs write it: an ``AssetWatcher`` whose trigger
(``FileDeleteTrigger``) fires when a file lands; each file is an event of the asset."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.providers.standard.triggers.file import FileDeleteTrigger
from airflow.sdk import DAG, Asset, AssetWatcher, task

INCOMING = Path(__file__).parent / "incoming.csv"
trigger = FileDeleteTrigger(filepath=str(INCOMING), poke_interval=0.2)
landed = Asset("landed_file", uri="file:///data/landed",
               watchers=[AssetWatcher(name="incoming_csv", trigger=trigger)])

with DAG("watched_consumer", schedule=[landed], start_date=datetime(2026, 1, 1), catchup=False,
         is_paused_upon_creation=False):

    @task
    def landed_events(*, triggering_asset_events):
        return [[e.extra, e.source_dag_id] for e in triggering_asset_events[landed]]

    landed_events()
