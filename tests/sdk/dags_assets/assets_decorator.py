"""Asset-centric DAGs with ``@asset``, as Airflow's docs write them: each function is a DAG
whose task updates the asset of its name; ``clean_orders`` runs when ``raw_orders`` does."""

from __future__ import annotations

from airflow.sdk import Metadata, asset


@asset(schedule=None, uri="file:///data/raw_orders.csv", is_paused_upon_creation=False)
def raw_orders(self):
    yield Metadata(self, {"rows": 12})


@asset(schedule=[raw_orders], uri="file:///data/clean_orders.csv", is_paused_upon_creation=False)
def clean_orders(self, context, raw_orders):
    rows = context["inlet_events"][raw_orders][-1].extra["rows"]
    return {"input": raw_orders.uri, "rows": rows}
