"""A chain across four DAGs, each link as Airflow's docs write it.

- ``chain_a`` starts ``chain_c`` and then ``chain_b`` at its own logical date, and waits
  for ``chain_b`` to finish (``TriggerDagRunOperator``, ``wait_for_completion=True``);
- ``chain_b`` holds until the file ``release`` appears beside this one, then updates the
  asset ``chain_b_report``;
- ``chain_c`` waits in the triggerer for ``chain_b``'s ``publish`` at its logical date
  (``ExternalTaskSensor(deferrable=True)``);
- ``chain_d`` is scheduled on ``chain_b_report``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.providers.standard.sensors.external_task import ExternalTaskSensor
from airflow.sdk import DAG, Asset, task

START = pendulum.datetime(2026, 1, 1, tz="UTC")
RELEASE = Path(__file__).parent / "release"
report = Asset("chain_b_report", uri="file:///data/chain_b_report")

with DAG("chain_a", schedule=None, start_date=START, catchup=False, is_paused_upon_creation=False):
    start_c = TriggerDagRunOperator(task_id="trigger_c", trigger_dag_id="chain_c",
                                    logical_date="{{ logical_date.isoformat() }}")
    run_b = TriggerDagRunOperator(task_id="trigger_b", trigger_dag_id="chain_b",
                                  logical_date="{{ logical_date.isoformat() }}",
                                  wait_for_completion=True, poke_interval=1,
                                  allowed_states=["success"], failed_states=["failed"])
    start_c >> run_b


with DAG("chain_b", schedule=None, start_date=START, catchup=False, is_paused_upon_creation=False):

    @task
    def hold():
        deadline = time.monotonic() + 240
        while not RELEASE.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{RELEASE} did not appear")
            time.sleep(0.2)
        return "released"

    @task(outlets=[report])
    def publish(*, outlet_events, dag_run):
        outlet_events[report].extra = {"published_by": dag_run.run_id}
        return "published"

    hold() >> publish()


with DAG("chain_c", schedule=None, start_date=START, catchup=False, is_paused_upon_creation=False):
    wait_b = ExternalTaskSensor(task_id="wait_b", external_dag_id="chain_b",
                                external_task_ids=["publish"], allowed_states=["success"],
                                failed_states=["failed", "upstream_failed"], deferrable=True,
                                poke_interval=1, timeout=300)

    @task
    def after_b():
        return "chain_b published"

    wait_b >> after_b()


with DAG("chain_d", schedule=[report], start_date=START, catchup=False, is_paused_upon_creation=False):

    @task
    def consume(*, triggering_asset_events):
        return [[e.source_dag_id, e.source_run_id, e.extra] for e in triggering_asset_events[report]]

    consume()
