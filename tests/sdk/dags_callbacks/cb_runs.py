"""DAG callbacks when runs end: success (a list of callables), task failure (with a
notifier and the task's own in-process callback and email), dagrun_timeout."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import dag, task

OUT = Path(__file__).resolve().parent.parent / "out"


def record(name):
    """A callback writing what its context holds to OUT/<name>.jsonl."""

    def callback(context):
        ti, run = context.get("ti"), context.get("dag_run")
        line = {"reason": context.get("reason"), "run_id": context.get("run_id"),
                "dag_id": context["dag"].dag_id,
                "dag_run": getattr(run, "run_id", None),
                "run_state": str(getattr(getattr(run, "state", None), "value", None)),
                "task_id": getattr(ti, "task_id", None),
                "try_number": getattr(ti, "try_number", None),
                "params": dict(context.get("params") or {}), "pid": os.getpid()}
        with open(OUT / f"{name}.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")

    callback.__name__ = name
    return callback


@dag(schedule=None, start_date=datetime(2024, 1, 1), catchup=False,
     params={"who": "sluice"},
     on_success_callback=[record("success_a"), record("success_b")],
     on_failure_callback=record("success_never"))
def cb_success():
    @task
    def first():
        return 1

    @task
    def second(x):
        return x + 1

    second(first())


cb_success()


@dag(schedule=None, start_date=datetime(2024, 1, 1), catchup=False,
     on_failure_callback=[record("dag_failure"),
                          SmtpNotifier(to="dag-owner@example.com",
                                       subject="run {{ run_id }} of {{ dag.dag_id }} failed",
                                       html_content="reason: {{ reason }}")])
def cb_failure():
    @task
    def ok():
        return 1

    @task(retries=0, on_failure_callback=record("task_failure_in_slot"),
          email=["ops@example.com"], email_on_failure=True)
    def boom(x):
        raise ValueError("boom in the task")

    @task(on_failure_callback=record("upstream_failed_never"))
    def after(x):
        return x

    after(boom(ok()))


cb_failure()


@dag(schedule=None, start_date=datetime(2024, 1, 1), catchup=False,
     dagrun_timeout=timedelta(seconds=3), on_failure_callback=record("timed_out"))
def cb_timeout():
    @task
    def sleeper():
        import time

        time.sleep(120)

    sleeper()


cb_timeout()
