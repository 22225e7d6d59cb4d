"""What ``sluice variables`` / ``sluice connections`` store is what a task gets from Airflow's SDK.

The commands run as processes against the database of a real Execution API server
(``python -m worker.execution_api``, the fixtures of ``test_execution_api``), with the
same ``$SLUICE_HOME`` and so the same Fernet key. The task side is the SDK's own:
``Variable.get`` / ``BaseHook.get_connection`` send their request through
``SUPERVISOR_COMMS`` to the SDK's supervisor request handler, which calls the API with
the SDK's ``Client`` (``worker.sdk_inprocess``, as a worker slot runs a try). And
Sluice's own URI and JSON rules give what Airflow's ``Connection`` gives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager

import psutil
import pytest
import structlog
from airflow.models.connection import Connection as AirflowConnection
from airflow.sdk import BaseHook, Variable
from airflow.sdk.exceptions import AirflowNotFoundException, AirflowRuntimeError
from airflow.sdk.execution_time.supervisor import PsutilTracker, set_supervisor_comms

from shared import secret_formats as fmt
from tests.sdk.test_execution_api import (  # noqa: F401 - the module's fixtures
    api_db,
    api_home,
    client_for,
    db,
    prefix,
    seed,
    server,
)
from tests.unit.test_secrets_cli import URI_CASES
from worker.sdk_inprocess import TryComms, TrySupervisor

pytestmark = pytest.mark.timeout(120)


def sluice(api_db, api_home, *args: str) -> str:  # noqa: F811
    """``sluice ARGS…`` as a process on the server's database and home; its stdout."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLUICE_", "AIRFLOW_VAR_", "AIRFLOW_CONN_"))}
    env.update(SLUICE_DATABASE_URL=api_db, SLUICE_HOME=str(api_home))
    done = subprocess.run([sys.executable, "-m", "shared.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextmanager
def in_task(server, ti_uuid):  # noqa: F811
    """This process as the task of try ``ti_uuid``: the SDK's calls go to the server."""
    sup = TrySupervisor(id=ti_uuid, pid=os.getpid(), process=PsutilTracker(psutil.Process()),
                        process_log=structlog.get_logger(), client=client_for(server, ti_uuid))
    try:
        with set_supervisor_comms(TryComms(sup)):
            yield
    finally:
        sup.close()


async def test_what_the_cli_sets_is_what_the_sdk_gets(server, db, api_db, api_home):  # noqa: F811
    sluice(api_db, api_home, "variables", "set", "rt_plain", "hunter2 with spaces")
    sluice(api_db, api_home, "variables", "set", "rt_json", '{"batch": [1, 2]}', "--json")
    sluice(api_db, api_home, "variables", "set", "from_env", "the table's value")
    uri = "postgresql://etl%40corp:s%3Ac%2Fret@pg.internal:5433/sales?sslmode=verify-full"
    sluice(api_db, api_home, "connections", "add", "rt_pg", "--conn-uri", uri)
    sluice(api_db, api_home, "connections", "add", "rt_http", "--conn-json",
           '{"conn_type": "http", "host": "https://api.example", "password": "tok", '
           '"extra": {"headers": {"X-A": "1"}, "retries": 3}}')
    raw = await db.fetchval("SELECT password FROM connection WHERE conn_id = 'rt_pg'")
    assert "s:c/ret" not in raw

    _, tis = await seed(db, "secrets_rt", "run-1", [("use", -1)])
    with in_task(server, tis[("use", -1)]):
        assert Variable.get("rt_plain") == "hunter2 with spaces"
        assert Variable.get("rt_json", deserialize_json=True) == {"batch": [1, 2]}
        assert Variable.get("from_env") == "env value"  # the server's AIRFLOW_VAR_FROM_ENV
        assert Variable.get("rt_missing", default="fallback") == "fallback"
        with pytest.raises(AirflowRuntimeError, match="VARIABLE_NOT_FOUND"):
            Variable.get("rt_missing")
        pg = BaseHook.get_connection("rt_pg")
        assert (pg.conn_type, pg.host, pg.schema, pg.login, pg.password, pg.port) == \
            ("postgres", "pg.internal", "sales", "etl@corp", "s:c/ret", 5433)
        assert pg.extra_dejson == {"sslmode": "verify-full"}
        http = BaseHook.get_connection("rt_http")
        assert (http.host, http.password, http.extra_dejson) == \
            ("https://api.example", "tok", {"headers": {"X-A": "1"}, "retries": 3})
        with pytest.raises(AirflowNotFoundException):
            BaseHook.get_connection("rt_missing")
        Variable.set("rt_from_task", {"k": "v"}, serialize_json=True)

    assert json.loads(sluice(api_db, api_home, "variables", "get", "rt_from_task", "--json")) \
        == {"k": "v"}
    shown = json.loads(sluice(api_db, api_home, "connections", "get", "rt_pg", "-o", "json"))[0]
    assert shown["get_uri"] == pg.get_uri()


@pytest.mark.parametrize(("uri", "_"), URI_CASES, ids=[u for u, _ in URI_CASES])
def test_uris_read_and_write_as_airflows_connection_does(uri, _):
    theirs, ours = AirflowConnection(conn_id="c", uri=uri), fmt.from_uri(uri, "c")
    fields = ("conn_type", "host", "schema", "login", "password", "port")
    assert {f: getattr(ours, f) for f in fields} == {f: getattr(theirs, f) for f in fields}
    assert ours.extra_dejson == theirs.extra_dejson
    assert fmt.get_uri(ours) == theirs.get_uri()


@pytest.mark.parametrize("text", [
    '{"conn_type": "postgresql", "host": "h", "port": "5432", "extra": {"a": [1]}}',
    '{"conn_type": "abc-abc", "login": "me", "password": "", "extra": "{\\"k\\": \\"v\\"}"}',
    '{"conn_type": "http", "port": 0, "schema": "s", "description": "d"}',
    '{"uri": "mysql://u:p@h:1/s?x=1"}',
])
def test_json_reads_as_airflows_connection_does(text):
    theirs, ours = AirflowConnection.from_json(text, conn_id="c"), fmt.from_json(text, "c")
    fields = ("conn_type", "host", "schema", "login", "password", "port", "description", "extra")
    assert {f: getattr(ours, f) for f in fields} == {f: getattr(theirs, f) for f in fields}
