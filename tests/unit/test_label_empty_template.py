"""``map_index_template`` labels as Sluice keeps them, from a real run on the Task SDK runtime.

The SDK renders the template after the body ran (also when it raised or
skipped), against the context the body may have changed, and reports it
with the try's outcome; Sluice stores it per instance, ``""`` for an empty
template (as Airflow stores it) and nothing without one.
"""

from __future__ import annotations

import pytest

from tests.cluster import Cluster

pytestmark = pytest.mark.timeout(180)

LABELS_DAG = '''
from datetime import datetime
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

@task(map_index_template="{{ name }}-{{ ti.map_index }}", retries=0)
def body(x):
    get_current_context()["name"] = x.upper()
    if x == "boom":
        raise RuntimeError("boom")
    if x == "skip":
        raise AirflowSkipException("skip")
    return x

@task(map_index_template="", retries=0)
def empty(x):
    if x == "boom":
        raise RuntimeError("boom")
    return x

@task(map_index_template="{{ 1 / 0 }}", retries=0)
def badly_named(x):
    return x

def echo(x):
    return x

@dag(schedule=None, start_date=datetime(2026, 1, 1))
def labels():
    body.expand(x=["ok", "boom", "skip"])
    empty.expand(x=["ok", "boom"])
    badly_named.expand(x=[1])
    PythonOperator.partial(task_id="classic", python_callable=echo, retries=0,
                           map_index_template="{{ task.op_args[0] }}@{{ dag.dag_id }}").expand(
        op_args=[["first"], ["second"]])
    body.override(task_id="unlabelled", map_index_template=None).expand(x=["ok"])

labels()
'''


async def test_each_outcome_keeps_the_label_the_sdk_rendered(cluster: Cluster):
    cluster.write_dag("labels.py", LABELS_DAG)
    cluster.start("scheduler")
    cluster.start("worker")
    doc = await cluster.wait_run(await cluster.trigger("labels"), timeout=120)
    got = {(t["task_id"], t["map_index"]): (t["state"], t["label"]) for t in doc["tasks"]}
    assert got == {
        ("body", 0): ("success", "OK-0"),
        ("body", 1): ("failed", "BOOM-1"),
        ("body", 2): ("skipped", "SKIP-2"),
        ("empty", 0): ("success", ""),  # an empty template is an empty label, not none
        ("empty", 1): ("failed", ""),
        # after a successful body, the template's own error fails the try
        ("badly_named", 0): ("failed", None),
        ("classic", 0): ("success", "first@labels"),
        ("classic", 1): ("success", "second@labels"),
        ("unlabelled", 0): ("success", None),
    }
    assert doc["state"] == "failed"
