"""The DAG other DAGs trigger and wait for: ``cross_target``.

Its run's ``conf`` drives it, so one file serves every cross-DAG test:

- ``who``: echoed back by ``read_conf`` (what a triggered run's tasks see);
- ``sleep_s``: how long ``produce`` works before it ends (so waiters really wait);
- ``fail``: ``produce`` raises, the ``work`` group's tasks end ``upstream_failed`` and
  the run fails.

``produce`` and the task group ``work`` are what ``ExternalTaskSensor`` waits on;
``mark_sensor_poke`` is the ``ExternalTaskMarker`` Airflow's docs pair with such a
sensor (in Airflow 3.3, as in Sluice, it runs as the ``EmptyOperator`` it is).
"""

from __future__ import annotations

import time

import pendulum
from airflow.providers.standard.sensors.external_task import ExternalTaskMarker
from airflow.sdk import dag, task, task_group


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     tags=["cross_dag"], is_paused_upon_creation=False)
def cross_target():
    @task
    def read_conf(dag_run=None):
        """What the triggering task sent (``TriggerDagRunOperator(conf=...)``)."""
        return {"conf": dag_run.conf, "run_id": dag_run.run_id,
                "logical_date": dag_run.logical_date.isoformat()}

    @task(retries=0)
    def produce(dag_run=None):
        time.sleep(float(dag_run.conf.get("sleep_s", 0)))
        if dag_run.conf.get("fail"):
            raise RuntimeError(f"cross_target was asked to fail by {dag_run.conf.get('who')}")
        return "produced"

    @task_group
    def work(value: str):
        @task
        def step_one(value: str):
            return f"{value} once"

        @task
        def step_two(value: str):
            return f"{value} twice"

        step_two(step_one(value))

    read_conf()
    produced = produce()
    work(produced)
    produced >> ExternalTaskMarker(task_id="mark_sensor_poke", external_dag_id="cross_sensor_poke",
                                   external_task_id="wait_task")


cross_target()
