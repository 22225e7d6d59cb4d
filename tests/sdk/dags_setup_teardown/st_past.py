"""``depends_on_past`` and ``wait_for_downstream`` across runs: each task waits for a file
named by the run's conf, so the test decides when each finishes."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, get_current_context, task


def wait_for_file(name: str) -> None:
    """Until the test creates ``name`` in the folder the worker's ``ST_GATES_DIR`` names."""
    gates = Path(os.environ["ST_GATES_DIR"])
    deadline = time.monotonic() + 120
    while not (gates / name).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(name)
        time.sleep(0.05)


@task(depends_on_past=True)
def gate():
    conf = get_current_context()["dag_run"].conf
    if conf.get("fail"):
        raise RuntimeError("gate failed")
    return conf["n"]


@task
def after():
    wait_for_file(f"after_{get_current_context()['dag_run'].conf['n']}")


@task
def independent():
    return "ran"


@task(wait_for_downstream=True)
def wfd_gate():
    return get_current_context()["dag_run"].conf["n"]


with DAG("st_depends_on_past", schedule=None, start_date=datetime(2026, 1, 1)):
    gate()
    independent()

with DAG("st_wait_for_downstream", schedule=None, start_date=datetime(2026, 1, 1)):
    wfd_gate() >> after()
