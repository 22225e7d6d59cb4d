"""A TaskFlow chain whose return values flow, as in Airflow 3's tutorial."""

from __future__ import annotations

import json

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     tags=["e2e"])
def e2e_taskflow():
    @task()
    def extract() -> dict:
        return json.loads('{"1001": 301.27, "1002": 433.21, "1003": 502.22}')

    @task(multiple_outputs=True)
    def transform(order_data_dict: dict) -> dict:
        return {"total_order_value": round(sum(order_data_dict.values()), 2),
                "orders": len(order_data_dict)}

    @task()
    def load(total_order_value: float, orders: int) -> str:
        return f"{orders} orders, total {total_order_value:.2f}"

    summary = transform(extract())
    load(summary["total_order_value"], summary["orders"])


e2e_taskflow()
