"""An asset alias: the producer names the asset at run time; a DAG scheduled on the alias runs."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Asset, AssetAlias, Metadata, task

alias = AssetAlias("sluice-daily-export")

with DAG("alias_producer", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, is_paused_upon_creation=False):

    @task(outlets=[alias])
    def export(*, outlet_events):
        outlet_events[alias].add(Asset("s3://exports/2026-01-01.csv"), extra={"day": "2026-01-01"})

    @task(outlets=[alias])
    def export_metadata():
        yield Metadata(Asset("s3://exports/2026-01-02.csv"), extra={"day": "2026-01-02"}, alias=alias)

    export() >> export_metadata()


with DAG("alias_consumer", schedule=[alias], start_date=datetime(2026, 1, 1), catchup=False, is_paused_upon_creation=False):

    @task
    def days(*, triggering_asset_events):
        return sorted([e.asset.uri, e.extra["day"], [a.name for a in e.source_aliases]]
                      for e in triggering_asset_events[alias])

    @task(inlets=[alias])
    def through_alias(*, inlet_events):
        return sorted(e.extra["day"] for e in inlet_events[alias])

    days() >> through_alias()
