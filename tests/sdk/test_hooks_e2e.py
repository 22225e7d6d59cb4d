"""Connections and provider hooks in unmodified Airflow DAG files, on Sluice's real daemons.

A scheduler and a worker run as processes over ``dags_hooks/``. Connections are
created with ``sluice connections add`` (Airflow's URI and JSON formats) or given
to the worker as ``AIRFLOW_CONN_*``; tasks read them as Airflow's docs show:
``BaseHook.get_connection``, ``Connection.get``, ``{{ conn.x.host }}`` in a
``BashOperator`` command and in a ``PythonOperator``'s ``op_kwargs``, and
``PostgresHook`` / ``SQLExecuteQueryOperator`` (apache-airflow-providers-postgres)
querying this test's own PostgreSQL database through a role of its own. No
password reaches any log the daemons or the tries write.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit

import anyio
import asyncpg
import pytest
from airflow.sdk import serde

from tests.cluster import Cluster, admin_execute, own_cluster, task_log_path

pytestmark = pytest.mark.timeout(180)

DAGS = Path(__file__).parent / "dags_hooks"
RUN_TIMEOUT_S = 60.0
API_PASSWORD = f"api/{uuid.uuid4().hex}:secret"  # '/' and ':' must be percent-encoded in a URI
PG_PASSWORD = f"pg@{uuid.uuid4().hex}/pw"


@pytest.fixture(scope="module")
async def hooks(services, template_db, tmp_path_factory):
    """The cluster, with a database of its own and a login role the DAGs' connection uses.

    The role outlives the database: it cannot be dropped while the database grants it rights."""
    admin_url, _ = services
    role = f"hook_user_{uuid.uuid4().hex[:8]}"
    await admin_execute(admin_url, f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{PG_PASSWORD}'")
    try:
        async with own_cluster(services, template_db, tmp_path_factory.mktemp("hooks"),
                               name="hooks", dags=DAGS) as cluster:
            await add_connections(cluster, role)
            cluster.start("scheduler")
            cluster.start("worker",
                          AIRFLOW_CONN_FROM_ENV='{"conn_type": "http", "host": "env.example"}')
            yield cluster
    finally:
        await admin_execute(admin_url, f'DROP ROLE IF EXISTS "{role}"')


async def add_connections(cluster: Cluster, role: str) -> None:
    """Grant ``role`` what the DAGs' queries need and add the connections they use: ``sluice_pg``
    logs in as ``role`` to the cluster's own database; ``api_x`` carries a password."""
    conn = await asyncpg.connect(cluster.db_url)
    try:
        await conn.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{role}"; '
                           f'GRANT SELECT ON dag_run TO "{role}"')
    finally:
        await conn.close()
    server = urlsplit(cluster.db_url)
    pg_uri = (f"postgresql://{role}:{quote(PG_PASSWORD, safe='')}@{server.hostname}:"
              f"{server.port or 5432}{server.path}")
    for args in (["connections", "add", "sluice_pg", "--conn-uri", pg_uri],
                 ["connections", "add", "api_x", "--conn-uri",
                  f"http://svc-user:{quote(API_PASSWORD, safe='')}@api.example.internal:8443/"
                  "v2?region=eu-west-1&retries=3"]):
        out = cluster.cli(*args)
        assert out.returncode == 0, out.stderr


async def trigger_and_wait(cluster: Cluster, dag_id: str) -> dict:
    """``sluice dags trigger DAG --wait --json`` for a run that must succeed: its JSON document."""
    await cluster.wait_dag(dag_id, timeout=60)
    out = await anyio.to_thread.run_sync(lambda: cluster.cli(
        "dags", "trigger", dag_id, "--wait", "--json", "--timeout", str(RUN_TIMEOUT_S)))
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr,
                                 cluster.log("worker")[-3000:])
    return json.loads(out.stdout)


def returns(doc: dict) -> dict[str, object]:
    return {t["task_id"]: t["return_value"] for t in doc["tasks"] if t["map_index"] == -1}


def task_log(cluster: Cluster, doc: dict, task_id: str) -> list[dict]:
    path = task_log_path(cluster, doc, task_id)
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_no_password_logged(cluster: Cluster) -> None:
    """Neither password, plain or percent-encoded, in the daemons' logs or any try's log."""
    logs = sorted(cluster.root.glob("*.log")) + sorted((cluster.root / "home").rglob("*.log"))
    assert len(logs) >= 3, logs
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in (API_PASSWORD, PG_PASSWORD):
            for form in (secret, quote(secret, safe="")):
                assert form not in text, f"{form!r} in {path}"


# --- tests ---------------------------------------------------------------------------------
async def test_connections_reach_tasks_through_the_hook_and_templates(hooks):
    doc = await trigger_and_wait(hooks, "hooks_conn")
    got = returns(doc)
    assert got["read_connection"] == {
        "conn_type": "http", "host": "api.example.internal", "login": "svc-user",
        "schema": "v2", "port": 8443, "extra": {"region": "eu-west-1", "retries": 3},
        "password_sha256": hashlib.sha256(API_PASSWORD.encode()).hexdigest(),
        "same_through_connection_get": True, "from_env_host": "env.example"}
    assert got["echo_host"] == "host=api.example.internal port=8443"
    assert got["templated"] == "svc-user@api.example.internal in eu-west-1"
    # the task printed the password; the SDK's masker wrote *** in its place
    printed = [line["event"] for line in task_log(hooks, doc, "read_connection")
               if line.get("logger") == "task.stdout"]
    assert printed == ["calling api.example.internal with password ***"], printed
    assert_no_password_logged(hooks)


async def test_postgres_hook_queries_the_database_through_a_cli_made_connection(hooks):
    doc = await trigger_and_wait(hooks, "hooks_postgres")
    got = returns(doc)
    assert got["write_rows"] == 3
    assert got["query"]["rows"] == [1, 2, 3]
    assert got["query"]["user"].startswith("hook_user_")
    conn = await hooks.connect()
    try:
        runs = await conn.fetchval("SELECT count(*) FROM dag_run WHERE dag_id = 'hooks_postgres'")
        rows = await conn.fetch("SELECT n FROM hook_rows WHERE run_id = $1 ORDER BY n",
                                doc["run_id"])
        total = await conn.fetchval(
            "SELECT x.value::text FROM xcom x JOIN dag_run r ON r.id = x.run_pk "
            "WHERE r.run_id = $1 AND x.task_id = 'total' AND x.key = 'return_value'",
            doc["run_id"])
    finally:
        await conn.close()
    assert got["query"]["dag_runs"] == runs >= 1
    assert [r["n"] for r in rows] == [1, 2, 3]
    # the operator's fetch_all rows, stored as the SDK's serde wrote them
    assert serde.deserialize(json.loads(total)) == [(6,)]
    assert_no_password_logged(hooks)


async def test_a_query_result_shows_as_plain_json_in_the_runs_document(hooks):
    """DESIGN's ``--json`` contract: ``return_value`` is plain JSON (a row tuple is a list)."""
    doc = await trigger_and_wait(hooks, "hooks_postgres")
    assert returns(doc)["total"] == [[6]]
