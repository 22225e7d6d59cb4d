"""A consumer that runs one at a time (``max_active_runs=1``): events that come while its
run is busy wait, and its next run consumes all of them."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Asset, task

HOLD = Path(__file__).parent / "hold_backlog"
backlog = Asset("backlog", uri="file:///data/backlog")

with DAG("backlog_producer", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
         is_paused_upon_creation=False):

    @task(outlets=[backlog])
    def add(*, outlet_events, dag_run):
        outlet_events[backlog].extra = {"run": dag_run.run_id}

    add()


with DAG("backlog_consumer", schedule=[backlog], start_date=datetime(2026, 1, 1), catchup=False,
         max_active_runs=1, is_paused_upon_creation=False):

    @task
    def drain(*, triggering_asset_events):
        deadline = time.monotonic() + 240
        while HOLD.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        return [e.extra["run"] for e in triggering_asset_events[backlog]]

    drain()
