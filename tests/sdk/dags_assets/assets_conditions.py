"""Conditional asset scheduling (``&`` waits for both, ``|`` for either), as in Airflow's docs."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Asset, task

a = Asset("cond_a", uri="file:///data/cond_a")
b = Asset("cond_b", uri="file:///data/cond_b")

for name, asset in (("cond_produce_a", a), ("cond_produce_b", b)):
    with DAG(name, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, is_paused_upon_creation=False):

        @task(outlets=[asset], task_id="emit")
        def emit(*, outlet_events, dag_run, asset=asset):
            outlet_events[asset].extra = {"from_run": dag_run.run_id}

        emit()


def consumer(dag_id, schedule):
    with DAG(dag_id, schedule=schedule, start_date=datetime(2026, 1, 1), catchup=False, is_paused_upon_creation=False):

        @task
        def consumed(*, triggering_asset_events):
            return sorted([key.name, e.extra["from_run"]]
                          for key, events in triggering_asset_events.items() for e in events)

        consumed()


consumer("cond_both", a & b)
consumer("cond_either", a | b)
