"""A try whose slot is killed: the worker fails it, the scheduler runs its retry callback."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import dag, task

OUT = Path(__file__).resolve().parent.parent / "out"


def record(name):
    def callback(context):
        ti = context["ti"]
        line = {"task_id": ti.task_id, "try_number": ti.try_number, "run_id": context["run_id"]}
        with open(OUT / f"{name}.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")

    callback.__name__ = name
    return callback


@dag(schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
def cb_killed():
    @task(retries=1, retry_delay=timedelta(seconds=1),
          on_retry_callback=record("killed_retry"), on_failure_callback=record("killed_failure"))
    def victim(ti=None):
        if ti.try_number == 1:
            (OUT / "killed_pid").write_text(str(os.getpid()))
            time.sleep(600)
        return "second try"

    victim()


cb_killed()
