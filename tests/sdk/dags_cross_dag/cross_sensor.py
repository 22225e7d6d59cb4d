"""DAGs whose ``ExternalTaskSensor``\\ s wait on ``cross_target`` at their own logical date.

- ``cross_sensor_poke``: a task, ``mode="poke"``;
- ``cross_sensor_reschedule``: a task and the task group ``work``, ``mode="reschedule"``;
- ``cross_sensor_deferrable``: a task, the group and the whole DAG run,
  ``deferrable=True`` (``WorkflowTrigger`` in the triggerer);
- ``cross_sensor_delta``: the run one hour earlier, by ``execution_delta`` (poke) and by
  ``execution_date_fn`` (reschedule).

Every sensor fails as soon as what it waits on reaches a failed state
(``failed_states``); ``report`` runs only when every sensor passed.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.sensors.external_task import ExternalTaskSensor
from airflow.sdk import DAG, task

START = pendulum.datetime(2026, 1, 1, tz="UTC")
WAIT = {"external_dag_id": "cross_target", "poke_interval": 1, "timeout": 180}
ON_TASK = {**WAIT, "external_task_ids": ["produce"], "allowed_states": ["success"],
           "failed_states": ["failed", "upstream_failed"], "skipped_states": ["skipped"]}
ON_GROUP = {**WAIT, "external_task_group_id": "work", "allowed_states": ["success"],
            "failed_states": ["failed", "upstream_failed"]}
ON_DAG = {**WAIT, "external_task_id": None, "allowed_states": ["success"],
          "failed_states": ["failed"]}


def an_hour_before(logical_date, **context):
    return logical_date - timedelta(hours=1)


def report_dag(dag_id: str, sensors: dict[str, dict]) -> None:
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["cross_dag"],
             is_paused_upon_creation=False):
        waits = [ExternalTaskSensor(task_id=task_id, **kwargs)
                 for task_id, kwargs in sensors.items()]

        @task
        def report(logical_date=None):
            return f"{dag_id} saw cross_target at {logical_date.isoformat()}"

        waits >> report()


report_dag("cross_sensor_poke", {"wait_task": {**ON_TASK, "mode": "poke"}})
report_dag("cross_sensor_reschedule", {"wait_task": {**ON_TASK, "mode": "reschedule"},
                                       "wait_group": {**ON_GROUP, "mode": "reschedule"}})
report_dag("cross_sensor_deferrable", {"wait_task": {**ON_TASK, "deferrable": True},
                                       "wait_group": {**ON_GROUP, "deferrable": True},
                                       "wait_dag": {**ON_DAG, "deferrable": True}})
report_dag("cross_sensor_delta", {
    "wait_delta": {**ON_TASK, "mode": "poke", "execution_delta": timedelta(hours=1)},
    "wait_date_fn": {**ON_TASK, "mode": "reschedule", "execution_date_fn": an_hour_before}})
