"""Branching and short-circuiting: @task.branch, BranchPythonOperator, ShortCircuitOperator."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import (
    BranchPythonOperator,
    ShortCircuitOperator,
)
from airflow.sdk import DAG, task

with DAG("e2e_branching", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    @task.branch
    def pick() -> str:
        return "left"

    @task
    def left() -> str:
        return "went left"

    @task
    def right() -> str:
        return "went right"

    @task(trigger_rule="none_failed_min_one_success")
    def join() -> str:
        return "joined"

    branch = pick()
    branch >> [left(), right()] >> join()

    classic_pick = BranchPythonOperator(task_id="classic_pick",
                                        python_callable=lambda: "classic_yes")
    classic_pick >> [EmptyOperator(task_id="classic_yes"), EmptyOperator(task_id="classic_no")]

    gate = ShortCircuitOperator(task_id="gate", python_callable=lambda: False)
    open_gate = ShortCircuitOperator(task_id="open_gate", python_callable=lambda: True)
    gate >> EmptyOperator(task_id="behind_gate")
    open_gate >> EmptyOperator(task_id="behind_open_gate")
