"""A producer and its consumer, as Airflow's asset docs write them: the producer's success
emits an event with ``extra``, the consumer reads it from ``triggering_asset_events`` and
from ``inlet_events``."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Asset, Metadata, dag, task

orders = Asset("s3://warehouse/orders.csv", extra={"owner": "sales"})
report = Asset(name="orders_report", uri="s3://warehouse/report.parquet")


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, is_paused_upon_creation=False)
def assets_producer():
    @task(outlets=[orders])
    def write_orders(*, outlet_events):
        outlet_events[orders].extra = {"rows": 3, "batch": "b1"}
        return "written"

    @task(outlets=[report])
    def write_report():
        yield Metadata(report, {"pages": 7})
        return "reported"

    write_orders() >> write_report()


assets_producer()


with DAG("assets_consumer", schedule=[orders], start_date=datetime(2026, 1, 1), catchup=False, is_paused_upon_creation=False):

    @task
    def read_triggers(*, triggering_asset_events, dag_run):
        return {"run_type": str(getattr(dag_run.run_type, "value", dag_run.run_type)),
                "events": {uri_or_name.uri: [[e.extra, e.source_dag_id, e.source_task_id]
                                             for e in events]
                           for uri_or_name, events in triggering_asset_events.items()}}

    @task(inlets=[orders])
    def read_inlets(*, inlet_events):
        last = inlet_events[orders][-1]
        return {"extra": last.extra, "source": last.source_task_id, "count": len(inlet_events[orders])}

    read_triggers() >> read_inlets()


with DAG("assets_report_consumer", schedule=[report], start_date=datetime(2026, 1, 1),
         catchup=False, is_paused_upon_creation=False):

    @task
    def pages(*, triggering_asset_events):
        return [e.extra["pages"] for e in triggering_asset_events[report]]

    pages()
