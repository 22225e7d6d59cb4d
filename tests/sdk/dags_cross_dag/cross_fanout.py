"""``cross_fanout``: starts ``cross_target`` and the sensor DAGs at one logical date.

Fire and forget (``wait_for_completion=False``). The run's ``conf``:

- ``target_conf``: the ``cross_target`` run's conf;
- ``target_offset_s``: ``cross_target``'s logical date is this run's minus that many
  seconds (``execution_delta`` waits on such a run);
- ``sensor_dags``: the DAGs to start at this run's own logical date (one mapped
  ``TriggerDagRunOperator`` instance each).
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     tags=["cross_dag"], is_paused_upon_creation=False)
def cross_fanout():
    TriggerDagRunOperator(
        task_id="trigger_target",
        trigger_dag_id="cross_target",
        conf="{{ dag_run.conf.get('target_conf', {}) | tojson }}",
        logical_date="{{ (logical_date - macros.timedelta(seconds="
                     "dag_run.conf.get('target_offset_s', 0))).isoformat() }}",
    )

    @task
    def sensor_dags(dag_run=None) -> list[str]:
        return dag_run.conf.get("sensor_dags", [])

    TriggerDagRunOperator.partial(
        task_id="trigger_sensors", logical_date="{{ logical_date.isoformat() }}",
    ).expand(trigger_dag_id=sensor_dags())


cross_fanout()
