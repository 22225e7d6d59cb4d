"""PostgresHook and SQLExecuteQueryOperator on a connection named ``sluice_pg``."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.sdk import DAG, task

with DAG("hooks_postgres", schedule=None, start_date=datetime(2026, 1, 1)) as dag:

    @task
    def write_rows(run_id=None) -> int:
        hook = PostgresHook(postgres_conn_id="sluice_pg")
        hook.run("CREATE TABLE IF NOT EXISTS hook_rows (run_id text, n int)")
        hook.insert_rows("hook_rows", [(run_id, n) for n in range(1, 4)],
                         target_fields=["run_id", "n"])
        return 3

    @task
    def query(run_id=None) -> dict:
        hook = PostgresHook(postgres_conn_id="sluice_pg")
        (runs,) = hook.get_first("SELECT count(*) FROM dag_run WHERE dag_id = %s",
                                 parameters=("hooks_postgres",))
        rows = hook.get_records("SELECT n FROM hook_rows WHERE run_id = %s ORDER BY n",
                                parameters=(run_id,))
        return {"dag_runs": runs, "rows": [n for (n,) in rows],
                "user": hook.get_first("SELECT current_user")[0]}

    total = SQLExecuteQueryOperator(
        task_id="total", conn_id="sluice_pg",
        sql="SELECT sum(n) FROM hook_rows WHERE run_id = '{{ run_id }}'")

    write_rows() >> query() >> total
