"""``cross_trigger_errors``: what a ``TriggerDagRunOperator`` meets when it cannot start a run.

The run's ``conf["target_run_id"]`` names a ``cross_target`` run that exists already:

- ``trigger_skip``: ``skip_when_already_exists=True`` -- the task is skipped;
- ``trigger_duplicate``: neither skip nor reset -- the task fails;
- ``trigger_unknown``: a DAG that does not exist -- the task fails with the server's 404.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG

with DAG("cross_trigger_errors", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         catchup=False, tags=["cross_dag"], is_paused_upon_creation=False):
    TriggerDagRunOperator(
        task_id="trigger_skip",
        trigger_dag_id="cross_target",
        trigger_run_id="{{ dag_run.conf['target_run_id'] }}",
        skip_when_already_exists=True,
    )
    TriggerDagRunOperator(
        task_id="trigger_duplicate",
        trigger_dag_id="cross_target",
        trigger_run_id="{{ dag_run.conf['target_run_id'] }}",
    )
    TriggerDagRunOperator(task_id="trigger_unknown", trigger_dag_id="cross_no_such_dag")
