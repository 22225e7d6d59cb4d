"""A task cannot read Sluice's credentials, and its log is private (real daemons).

The worker is started with a database URL carrying a password, a Redis URL and
``PGPASSWORD``; a PythonOperator returns its whole environment and a
BashOperator prints its own. Neither may hold any of them; what tasks need
(PATH, HOME, ``AIRFLOW_*``) stays. Task log files are 0600 in 0700 directories.
"""

from __future__ import annotations

import base64
import os
import stat
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.cluster import Cluster

pytestmark = pytest.mark.timeout(120)

DAG = """
    import os
    from datetime import datetime
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import dag

    @dag(schedule=None, start_date=datetime(2026, 1, 1))
    def envs():
        PythonOperator(task_id="python_env", python_callable=lambda: dict(os.environ))
        BashOperator(task_id="bash_env", bash_command="echo started; env | base64 -w0")

    envs()
"""


def with_password(url: str, password: str) -> str:
    """The same URL with ``password`` (the test server trusts local connections)."""
    parts = urlsplit(url)
    user = (parts.username or "root") + ":" + password
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


async def test_tasks_get_no_sluice_credentials_and_private_logs(cluster: Cluster):
    secret = f"pw-{uuid.uuid4().hex}"
    db_url = with_password(cluster.db_url, secret)
    redis_url = cluster.env["SLUICE_REDIS_URL"]
    cluster.write_dag("envs.py", DAG)
    cluster.start("scheduler")
    cluster.start("worker", SLUICE_DATABASE_URL=db_url, PGPASSWORD=secret,
                  AIRFLOW_VAR_GREETING="hello")
    await cluster.wait_dag("envs", timeout=120)  # the scheduler imports Airflow first
    doc = await cluster.wait_run(await cluster.trigger("envs"), 120)
    tasks = cluster.by_task(doc)
    assert doc["state"] == "success", doc

    python_env = tasks["python_env"]["return_value"]
    bash_text = base64.b64decode(tasks["bash_env"]["return_value"]).decode()
    bash_env = dict(line.split("=", 1) for line in bash_text.splitlines() if "=" in line)
    for env in (python_env, bash_env):
        assert not [k for k in env if k.startswith("SLUICE_")]
        assert "PGPASSWORD" not in env
        assert not [k for k, v in env.items() if secret in v or redis_url in v]
        assert env["PATH"] and env["HOME"] and env["AIRFLOW_VAR_GREETING"] == "hello"

    logs = cluster.root / "home" / "logs"
    files = [p for p in logs.rglob("*") if p.is_file()]
    assert len(files) == 2 and all(secret not in p.read_text() for p in files)
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    dirs = [logs, *(p for p in logs.rglob("*") if p.is_dir())]
    assert {stat.S_IMODE(os.stat(d).st_mode) for d in dirs} == {0o700}
