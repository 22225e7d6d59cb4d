"""A try whose worker dies: its task's on_failure_callback and email run in the scheduler."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from airflow.sdk import dag, task

OUT = Path(__file__).resolve().parent.parent / "out"


def zombie_failure(context):
    ti = context["ti"]
    line = {"task_id": ti.task_id, "try_number": ti.try_number, "map_index": ti.map_index,
            "run_id": context["run_id"], "dag_run": context["dag_run"].run_id,
            "ds": context.get("ds")}
    with open(OUT / "zombie_failure.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")


def zombie_retry(context):
    (OUT / "zombie_retry").write_text("the retry callback ran")


@dag(schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
def cb_zombie():
    @task(retries=0, on_failure_callback=zombie_failure, on_retry_callback=zombie_retry,
          email="ops@example.com", email_on_failure=True)
    def hang():
        (OUT / "zombie_started").write_text("started")
        time.sleep(600)

    hang()


cb_zombie()
