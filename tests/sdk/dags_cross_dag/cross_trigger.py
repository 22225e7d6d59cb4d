"""DAGs that trigger ``cross_target`` with ``TriggerDagRunOperator`` and wait for it.

- ``cross_trigger_poke``: waits in the task (``wait_for_completion=True``, poke mode);
- ``cross_trigger_deferrable``: waits in the triggerer (``deferrable=True``:
  ``DagStateTrigger``), resumed by ``execute_complete``.

Both pass their own run's ``conf["target_conf"]`` on as the triggered run's ``conf``,
use ``conf["target_run_id"]`` as its run id when given (else Airflow's
``manual__<logical date>``), and reset an existing run of that id
(``reset_dag_run=True``: it is cleared and runs again; its conf is kept).
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, task

for dag_id, deferrable in (("cross_trigger_poke", False), ("cross_trigger_deferrable", True)):
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
             catchup=False, tags=["cross_dag"],
             is_paused_upon_creation=False):
        trigger = TriggerDagRunOperator(
            task_id="trigger_target",
            trigger_dag_id="cross_target",
            trigger_run_id="{{ dag_run.conf.get('target_run_id', '') }}",
            conf="{{ dag_run.conf.get('target_conf', {}) | tojson }}",
            reset_dag_run=True,
            wait_for_completion=True,
            poke_interval=1,
            allowed_states=["success"],
            failed_states=["failed"],
            deferrable=deferrable,
        )

        @task
        def after(ti=None):
            """The triggered run's id, as the operator pushed it."""
            return ti.xcom_pull(task_ids="trigger_target", key="trigger_run_id")

        trigger >> after()
