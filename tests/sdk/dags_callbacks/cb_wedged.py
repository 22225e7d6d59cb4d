"""A try wedged past its execution_timeout (it blocks the SDK's alarm): the worker kills
its slot, the scheduler runs the task's on_failure_callback."""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import dag, task

OUT = Path(__file__).resolve().parent.parent / "out"


def wedged_failure(context):
    ti = context["ti"]
    line = {"task_id": ti.task_id, "try_number": ti.try_number, "run_id": context["run_id"]}
    with open(OUT / "wedged_failure.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")


@dag(schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
def cb_wedged():
    @task(retries=0, execution_timeout=timedelta(seconds=1), on_failure_callback=wedged_failure)
    def wedged():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(600)

    wedged()


cb_wedged()
