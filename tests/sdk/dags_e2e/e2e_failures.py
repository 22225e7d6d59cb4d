"""Retries then failure: a task that raises, and one whose process dies."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import dag, task


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     default_args={"retries": 2, "retry_delay": timedelta(seconds=0)})
def e2e_failures():
    @task
    def always_fails():
        raise ValueError("this task never works")

    @task(retries=1)
    def exits():
        os._exit(3)

    @task
    def downstream():
        return "never runs"

    always_fails() >> downstream()
    exits()


e2e_failures()
