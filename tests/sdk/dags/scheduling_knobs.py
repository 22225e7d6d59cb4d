"""What the scheduler reads from a DAG and its tasks besides mapping: schedule and dates,
run limits, params, default_args, trigger rules, retries and backoff, timeouts, pools,
queues, priority weights by each weight rule, groups and empty tasks."""

from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import (
    DAG,
    TaskGroup,
    TriggerRule,
)

ARGS = {"retries": 2, "retry_delay": timedelta(seconds=7), "pool": "shared", "queue": "q1"}

with DAG(dag_id="knobs_cron", schedule="@daily", start_date=datetime(2026, 1, 1),
         end_date=datetime(2027, 1, 1), catchup=True, max_active_runs=3, max_active_tasks=5,
         dagrun_timeout=timedelta(hours=1), is_paused_upon_creation=False, description="knobs",
         tags=["a", "b"], params={"n": 3, "name": "x"}, default_args=ARGS):
    first = EmptyOperator(task_id="first", priority_weight=10)
    up = BashOperator(task_id="up", bash_command="echo", weight_rule="upstream", priority_weight=2)
    absolute = BashOperator(task_id="absolute", bash_command="echo", weight_rule="absolute",
                            priority_weight=7, retries=0, execution_timeout=timedelta(minutes=3),
                            retry_exponential_backoff=True, max_retry_delay=timedelta(minutes=2))
    with TaskGroup("tg", default_args={"queue": "q2", "pool_slots": 2}) as tg:
        inner = EmptyOperator(task_id="inner", trigger_rule=TriggerRule.ONE_SUCCESS)
        noisy = EmptyOperator(task_id="noisy", on_success_callback=print)
        inner >> noisy
    last = BashOperator(task_id="last", bash_command="echo", trigger_rule="none_failed",
                        max_active_tis_per_dag=1, max_active_tis_per_dagrun=1)
    first >> [up, absolute] >> tg >> last

with DAG(dag_id="knobs_delta", schedule=timedelta(hours=6), start_date=datetime(2026, 3, 1)):
    EmptyOperator(task_id="only")

with DAG(dag_id="knobs_once", schedule="@once", start_date=datetime(2026, 3, 1)):
    EmptyOperator(task_id="only")

with DAG(dag_id="knobs_cron_expr", schedule="*/15 6-18 * * 1-5", start_date=datetime(2026, 3, 1)):
    EmptyOperator(task_id="only")
