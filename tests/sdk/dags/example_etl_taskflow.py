"""A TaskFlow ETL chain: extract -> transform -> load, values flowing through XCom."""

from datetime import datetime

from airflow.sdk import (
    dag,
    task,
)


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["example"])
def etl_taskflow():
    @task
    def extract() -> dict:
        return {"orders": [120.5, 80.0, 42.25], "currency": "EUR"}

    @task
    def transform(data: dict) -> dict:
        return {"total": round(sum(data["orders"]), 2), "count": len(data["orders"]),
                "currency": data["currency"]}

    @task
    def load(summary: dict) -> str:
        line = f"{summary['count']} orders, {summary['total']} {summary['currency']}"
        print(line)
        return line

    load(transform(extract()))


etl_taskflow()
