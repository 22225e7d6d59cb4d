"""DAG callbacks that raise or hang: logged or killed, the scheduler goes on."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from airflow.sdk import dag, task

OUT = Path(__file__).resolve().parent.parent / "out"


def raising(context):
    print("raising callback says hello")
    raise ZeroDivisionError("the callback divided by zero")


def after_raise(context):
    (OUT / "after_raise").write_text(context["reason"])


def hanging(context):
    (OUT / "hanging_started").write_text("started")
    time.sleep(3600)


@dag(schedule=None, start_date=datetime(2024, 1, 1), catchup=False,
     on_success_callback=[raising, after_raise])
def cb_raising():
    @task
    def noop():
        return None

    noop()


cb_raising()


@dag(schedule=None, start_date=datetime(2024, 1, 1), catchup=False,
     on_success_callback=hanging)
def cb_hanging():
    @task
    def noop():
        return None

    noop()


cb_hanging()
