"""Connections as tasks read them: BaseHook.get_connection, Connection.get, {{ conn.x }}."""

from __future__ import annotations

import hashlib
from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, BaseHook, Connection, task


def describe(host: str, login: str, region: str, **context) -> str:
    return f"{login}@{host} in {region}"


with DAG("hooks_conn", schedule=None, start_date=datetime(2026, 1, 1)) as dag:

    @task
    def read_connection() -> dict:
        conn = BaseHook.get_connection("api_x")
        print(f"calling {conn.host} with password {conn.password}")  # masked in the task log
        return {
            "conn_type": conn.conn_type, "host": conn.host, "login": conn.login,
            "schema": conn.schema, "port": conn.port, "extra": conn.extra_dejson,
            "password_sha256": hashlib.sha256(conn.password.encode()).hexdigest(),
            "same_through_connection_get": Connection.get("api_x").get_uri() == conn.get_uri(),
            "from_env_host": BaseHook.get_connection("from_env").host,
        }

    echo_host = BashOperator(
        task_id="echo_host",
        bash_command="echo 'host={{ conn.api_x.host }} port={{ conn.api_x.port }}'")
    templated = PythonOperator(
        task_id="templated", python_callable=describe,
        op_kwargs={"host": "{{ conn.api_x.host }}", "login": "{{ conn.api_x.login }}",
                   "region": "{{ conn.api_x.extra_dejson.region }}"})

    read_connection() >> echo_host >> templated
