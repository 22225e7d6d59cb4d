"""Two independent tasks, one quick and one slow."""

from __future__ import annotations

import time
from datetime import datetime

from airflow.sdk import dag, task


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def e2e_two_tasks():
    @task
    def quick() -> str:
        return "quick done"

    @task
    def slow() -> str:
        time.sleep(1.5)
        return "slow done"

    quick()
    slow()


e2e_two_tasks()
