"""The Execution API, served as a real process on a loopback port over a fresh database,
driven by the Task SDK's own ``airflow.sdk.api.client.Client``.

Instances are seeded with Sluice's own queries (upsert_dag, insert_run, insert_tis,
queue_tis, claim_tis), as the scheduler and the worker write them.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from airflow.sdk.api.client import Client, ServerResponseError
from airflow.sdk.api.datamodels._generated import API_VERSION, TerminalStateNonSuccess
from airflow.sdk.exceptions import TaskAlreadyRunningError
from airflow.sdk.execution_time.comms import DeferTask, RescheduleTask, SkipDownstreamTasks
from cryptography.fernet import Fernet
from tenacity import stop_after_attempt

from shared.db import _init_connection, q
from shared.messages import RunChanged, TriggersPending, decode
from worker.execution_api.tokens import mint

SECRET = "test-secret-of-the-execution-api"
WORKER = "worker-under-test"
TTL_S = 24 * 3600.0
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTES = itertools.count(1)  # distinct logical dates for runs of one DAG
SPEC_TASKS = [
    {"task_id": "extract", "operator": "PythonOperator", "upstream": [], "downstream": ["load"],
     "retries": 2, "retry_delay_s": 7.0},
    {"task_id": "load", "operator": "PythonOperator", "upstream": ["extract"], "downstream": [],
     "group_id": "etl"},
    {"task_id": "report", "operator": "PythonOperator", "upstream": [], "downstream": [],
     "group_id": "etl.inner"},
]


# --- the server and the database -----------------------------------------------------------
@pytest.fixture(scope="module")
async def api_db(services, template_db):
    admin_url, _ = services
    name = f"sluice_api_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    await conn.close()
    yield admin_url.rpartition("/")[0] + "/" + name
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


@pytest.fixture(scope="module")
def api_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sluice-home")


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"api{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def server(api_db, api_home, services, prefix):
    """``python -m worker.execution_api`` on a free loopback port; yields (base_url, pid)."""
    env = {**os.environ, "SLUICE_DATABASE_URL": api_db, "SLUICE_REDIS_URL": services[1],
           "SLUICE_STREAM_PREFIX": prefix, "SLUICE_HOME": str(api_home), "SLUICE_API_PORT": "0",
           "SLUICE_API_TOKEN_SECRET": SECRET, "SLUICE_WORKER_ID": WORKER,
           "AIRFLOW_VAR_FROM_ENV": "env value",
           "AIRFLOW_CONN_ENV_DB": "postgres://reader:s%40cret@db.example:5433/sales?sslmode=require"}
    env.pop("SLUICE_FERNET_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "worker.execution_api"], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(proc.stdout.readline())["port"]
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def db(api_db):
    conn = await asyncpg.connect(api_db)
    await _init_connection(conn)
    yield conn
    await conn.close()


@pytest.fixture
async def streams(services, prefix):
    redis = aioredis.from_url(services[1])
    yield redis
    await redis.aclose()


def client_for(server, ti_uuid, **kwargs) -> Client:
    token = mint(ti_uuid, SECRET.encode(), TTL_S) if ti_uuid is not None else ""
    return Client(base_url=server[0], token=token, **kwargs)


def once(client: Client, method: str, path: str, **kwargs) -> httpx.Response:
    """One request through the SDK client's own request path, without its 5xx retries."""
    return Client.request.retry_with(stop=stop_after_attempt(1))(client, method, path, **kwargs)


async def seed(db, dag_id: str, run_id: str, tasks: list[tuple[str, int]], *,
               logical_date: datetime | None = None, claim_by: str | None = WORKER,
               max_tries: int = 2) -> tuple[int, dict[tuple[str, int], uuid.UUID]]:
    """A running DAG run whose instances are queued (and claimed by ``claim_by``)."""
    logical_date = logical_date or NOW + timedelta(minutes=next(MINUTES))
    spec = {"dag_id": dag_id, "fileloc": f"/dags/{dag_id}.py", "tags": ["api"],
            "tasks": SPEC_TASKS}
    await db.fetchrow(q("upsert_dag"), dag_id, f"/dags/{dag_id}.py", "hash", spec, False)
    run_pk = await db.fetchval(q("insert_run"), dag_id, run_id, "manual", logical_date,
                               logical_date, logical_date + timedelta(days=1), {"k": 1})
    await db.execute(q("start_run"), run_pk)
    n = len(tasks)
    await db.execute(q("insert_tis"), run_pk, [t for t, _ in tasks], [m for _, m in tasks],
                     [max_tries] * n, ["default"] * n, ["default_pool"] * n, [1] * n, [1] * n)
    ids = [r["id"] for r in await db.fetch(
        "SELECT id FROM task_instance WHERE run_pk = $1 ORDER BY id", run_pk)]
    queued = await db.fetch(q("queue_tis"), ids)
    if claim_by is not None:
        await db.fetch(q("claim_tis"), [r["id"] for r in queued],
                       [r["try_number"] for r in queued], claim_by, None, None)
    rows = await db.fetch("SELECT task_id, map_index, uuid FROM task_instance WHERE run_pk = $1",
                          run_pk)
    return run_pk, {(r["task_id"], r["map_index"]): r["uuid"] for r in rows}


async def ti_row(db, ti_uuid):
    return await db.fetchrow("SELECT * FROM task_instance WHERE uuid = $1", ti_uuid)


async def messages(streams, prefix: str, name: str) -> list:
    return [decode(fields) for _, fields in await streams.xrange(f"{prefix}:{name}")]


def start(client: Client, ti_uuid, pid: int = 4242):
    return client.task_instances.start(ti_uuid, pid, datetime.now(UTC))


# --- a try from start to end ---------------------------------------------------------------
async def test_a_no_op_try_starts_renders_and_succeeds(server, db, streams, prefix):
    run_pk, tis = await seed(db, "noop", "run-1", [("extract", -1)])
    ti = tis[("extract", -1)]
    client = client_for(server, ti)

    context = start(client, ti)
    assert (context.dag_run.dag_id, context.dag_run.run_id) == ("noop", "run-1")
    assert context.dag_run.conf == {"k": 1} and context.dag_run.state.value == "running"
    assert context.max_tries == 2 and context.should_retry is True
    assert context.next_method is None and context.xcom_keys_to_clear == []
    client.task_instances.heartbeat(ti, 4242)
    client.task_instances.set_rtif(ti, {"bash_command": "echo {{ ds }}", "env": "x"})
    client.task_instances.succeed(ti, datetime.now(UTC), [], [], None)

    row = await ti_row(db, ti)
    assert (row["state"], row["worker_id"], row["pid"]) == ("success", None, 4242)
    assert row["end_date"] is not None
    assert json.loads(await db.fetchval(
        "SELECT rendered_fields::text FROM task_instance WHERE uuid = $1", ti)) == \
        {"bash_command": "echo {{ ds }}", "env": "x"}
    assert RunChanged(run_pk=run_pk) in await messages(streams, prefix, "events")
    # a repeated identical update is fine; a different one is refused with the state
    client.task_instances.succeed(ti, datetime.now(UTC), [], [], None)
    with pytest.raises(ServerResponseError) as refused:
        client.task_instances.finish(ti, TerminalStateNonSuccess.FAILED, datetime.now(UTC), None)
    assert refused.value.response.status_code == 409
    assert refused.value.detail["previous_state"] == "success"


async def test_run_is_refused_unless_queued_or_this_workers(server, db):
    _, tis = await seed(db, "starts", "run-1", [("extract", -1), ("load", -1), ("report", -1)])
    await db.execute("UPDATE task_instance SET worker_id = 'another-worker' WHERE uuid = $1",
                     tis[("load", -1)])
    await db.execute("UPDATE task_instance SET state = 'success' WHERE uuid = $1",
                     tis[("report", -1)])

    with pytest.raises(TaskAlreadyRunningError):
        start(client_for(server, tis[("load", -1)]), tis[("load", -1)])
    with pytest.raises(ServerResponseError) as refused:
        start(client_for(server, tis[("report", -1)]), tis[("report", -1)])
    assert refused.value.response.status_code == 409
    assert refused.value.detail == {
        "reason": "invalid_state", "previous_state": "success",
        "message": "TI was not in a state where it could be marked as running"}
    gone = uuid.uuid4()
    with pytest.raises(ServerResponseError) as missing:
        start(client_for(server, gone), gone)
    assert missing.value.response.status_code == 404
    # a queued instance nobody claimed yet is taken by this worker
    _, queued = await seed(db, "starts", "run-2", [("extract", -1)], claim_by=None)
    ti = queued[("extract", -1)]
    start(client_for(server, ti), ti)
    assert (await ti_row(db, ti))["worker_id"] == WORKER


@pytest.mark.parametrize("state", ["failed", "skipped", "removed", "upstream_failed"])
async def test_terminal_states(server, db, state):
    run_pk, tis = await seed(db, "terminal", f"run-{state}", [("extract", -1)])
    ti = tis[("extract", -1)]
    client = client_for(server, ti)
    start(client, ti)
    client.task_instances.finish(ti, TerminalStateNonSuccess(state), datetime.now(UTC), "lbl")
    row = await ti_row(db, ti)
    assert (row["state"], row["label"], row["worker_id"]) == (state, "lbl", None)


async def test_up_for_retry_waits_the_tasks_retry_delay_and_the_last_try_fails(server, db):
    _, tis = await seed(db, "retries", "run-1", [("extract", -1), ("load", -1)])
    first, given = tis[("extract", -1)], tis[("load", -1)]
    for ti in (first, given):
        start(client_for(server, ti), ti)
    client_for(server, first).task_instances.retry(first, datetime.now(UTC), None)
    client_for(server, given).task_instances.retry(given, datetime.now(UTC), None,
                                                   retry_delay_seconds=60, retry_reason="flaky")
    row = await ti_row(db, first)
    assert row["state"] == "up_for_retry"
    assert 6 <= (row["next_retry_at"] - row["end_date"]).total_seconds() <= 8.5  # spec: 7 s
    row = await ti_row(db, given)
    assert (row["state"], row["error"]) == ("up_for_retry", "flaky")
    assert 59 <= (row["next_retry_at"] - row["end_date"]).total_seconds() <= 61

    _, last = await seed(db, "retries", "run-2", [("extract", -1)], max_tries=0)
    ti = last[("extract", -1)]
    start(client_for(server, ti), ti)
    client_for(server, ti).task_instances.retry(ti, datetime.now(UTC), None)
    assert (await ti_row(db, ti))["state"] == "failed"


async def test_deferred_writes_the_trigger_and_the_resumed_start_gets_the_event(
        server, db, streams, prefix):
    run_pk, tis = await seed(db, "defers", "run-1", [("extract", -1)])
    ti = tis[("extract", -1)]
    client = client_for(server, ti)
    start(client, ti)
    kwargs = {"zeta": 1, "alpha": {"moment": "2026-03-01T12:00:00+00:00"}}
    client.task_instances.defer(ti, DeferTask(
        classpath="my_triggers.Waiter", trigger_kwargs=kwargs,
        trigger_timeout=timedelta(seconds=30), next_method="resume",
        next_kwargs={"b": 2, "a": 1}, rendered_map_index="waiting"))

    row = await ti_row(db, ti)
    assert (row["state"], row["next_method"], row["label"]) == ("deferred", "resume", "waiting")
    assert row["worker_id"] is None and row["trigger_timeout"] is not None
    trigger = await db.fetchrow("SELECT classpath, kwargs::text AS kwargs, ti_id, priority "
                                "FROM trigger WHERE id = $1", row["trigger_id"])
    assert trigger["classpath"] == "my_triggers.Waiter" and trigger["ti_id"] == row["id"]
    assert list(json.loads(trigger["kwargs"])) == ["zeta", "alpha"]  # key order kept
    assert TriggersPending() in await messages(streams, prefix, "triggers")
    assert RunChanged(run_pk=run_pk) in await messages(streams, prefix, "events")

    # the triggerer fires, the scheduler queues the same try, this worker claims it again
    await db.fetchrow(q("resume_ti"), row["id"], row["trigger_id"],
                      {"b": 2, "a": 1, "event": {"status": "done"}}, None)
    queued = await db.fetch(q("queue_tis"), [row["id"]])
    await db.fetch(q("claim_tis"), [row["id"]], [queued[0]["try_number"]], WORKER, None, None)
    assert (await ti_row(db, ti))["uuid"] == ti  # same try, same identity
    resumed = start(client, ti, pid=4343)
    assert resumed.next_method == "resume"
    assert resumed.next_kwargs == {"b": 2, "a": 1, "event": {"status": "done"}}
    assert resumed.start_date == row["start_date"]  # a resumed try keeps its first start


async def test_up_for_reschedule_waits_on_a_datetime_trigger_and_execute_runs_again(server, db):
    _, tis = await seed(db, "sensors", "run-1", [("extract", -1)])
    ti = tis[("extract", -1)]
    client = client_for(server, ti)
    start(client, ti)
    first_start = (await ti_row(db, ti))["start_date"]
    when = datetime.now(UTC) + timedelta(seconds=5)
    for count in (1, 2):
        client.task_instances.reschedule(ti, RescheduleTask(reschedule_date=when,
                                                            end_date=datetime.now(UTC)))
        row = await ti_row(db, ti)
        assert (row["state"], row["next_method"]) == ("deferred", "__reschedule__")
        trigger = await db.fetchrow("SELECT classpath, kwargs FROM trigger WHERE id = $1",
                                    row["trigger_id"])
        assert trigger["classpath"] == \
            "airflow.providers.standard.triggers.temporal.DateTimeTrigger"
        assert trigger["kwargs"]["moment"]["__data__"]["timestamp"] == when.timestamp()
        await db.fetchrow(q("resume_ti"), row["id"], row["trigger_id"],
                          {**row["next_kwargs"], "event": None}, None)
        queued = await db.fetch(q("queue_tis"), [row["id"]])
        await db.fetch(q("claim_tis"), [row["id"]], [queued[0]["try_number"]], WORKER, None, None)
        context = start(client, ti)
        assert context.next_method is None and context.task_reschedule_count == count
        started = client.task_instances.get_reschedule_start_date(ti, 1).start_date
        assert started == first_start


async def test_heartbeat_answers_409_once_the_try_is_not_this_process_or_running(server, db):
    run_pk, tis = await seed(db, "beats", "run-1", [("extract", -1)])
    ti = tis[("extract", -1)]
    client = client_for(server, ti)
    start(client, ti, pid=100)
    client.task_instances.heartbeat(ti, 100)
    with pytest.raises(ServerResponseError) as elsewhere:
        client.task_instances.heartbeat(ti, 101)
    assert (elsewhere.value.response.status_code, elsewhere.value.detail["reason"]) == \
        (409, "running_elsewhere")
    await db.execute("UPDATE task_instance SET state = 'skipped' WHERE uuid = $1", ti)
    with pytest.raises(ServerResponseError) as stopped:
        client.task_instances.heartbeat(ti, 100)
    assert stopped.value.detail == {
        "reason": "not_running", "current_state": "skipped",
        "message": "TI is no longer in the running state and task should terminate"}
    # the next try has a new identity: the old one is gone
    await db.execute("UPDATE task_instance SET state = 'up_for_retry' WHERE uuid = $1", ti)
    await db.fetch(q("queue_tis"), [(await db.fetchval(
        "SELECT id FROM task_instance WHERE uuid = $1", ti))])
    with pytest.raises(ServerResponseError) as gone:
        client.task_instances.heartbeat(ti, 100)
    assert gone.value.response.status_code == 404


# --- tokens, versions, unknown routes ------------------------------------------------------
async def test_tokens_are_checked_on_every_call(server, db):
    _, tis = await seed(db, "tokens", "run-1", [("extract", -1), ("load", -1)])
    mine, other = tis[("extract", -1)], tis[("load", -1)]

    for client in (client_for(server, None),
                   Client(base_url=server[0], token=mint(mine, b"forged", TTL_S)),
                   Client(base_url=server[0], token=mint(mine, SECRET.encode(), -5))):
        with pytest.raises(ServerResponseError) as refused:
            start(client, mine)
        response = refused.value.response
        assert response.status_code == 401 and response.headers["content-type"] == \
            "application/json"
        assert refused.value.detail["reason"] == "unauthorized"
    with pytest.raises(ServerResponseError) as foreign:
        client_for(server, mine).task_instances.heartbeat(other, 1)
    assert foreign.value.response.status_code == 403
    # the SDK turns a refused secret into "permission denied", never "not found"
    assert client_for(server, None).variables.get("x").error.value == "PERMISSION_DENIED"

    # a token past half its life is renewed, and the SDK's client adopts the new one
    client = Client(base_url=server[0], token=mint(mine, SECRET.encode(), 60))
    start(client, mine)
    assert client.auth.token != mint(mine, SECRET.encode(), 60)
    assert client.auth.token.count(".") == 1


async def test_the_api_version_header_is_honoured(server, db):
    _, tis = await seed(db, "versions", "run-1", [("extract", -1)])
    ti = tis[("extract", -1)]
    client = client_for(server, ti)
    assert client.headers["airflow-api-version"] == API_VERSION
    response = once(client, "GET", "dag-runs/versions/run-1/state")
    assert response.headers["airflow-api-version"] == API_VERSION
    client.headers["airflow-api-version"] = "2025-04-11"
    with pytest.raises(ServerResponseError) as refused:
        client.dag_runs.get_state("versions", "run-1")
    assert refused.value.response.status_code == 400
    assert refused.value.detail == {
        "reason": "unsupported_api_version",
        "message": f"Sluice serves Execution API version {API_VERSION}; "
                   "the client asked for '2025-04-11'"}


async def test_a_route_sluice_does_not_implement_answers_400_naming_it(server, db):
    _, tis = await seed(db, "unknown", "run-1", [("extract", -1)])
    client = client_for(server, tis[("extract", -1)])
    for method, path, named in [
            ("PUT", "store/asset/by-name/value", "PUT /store/asset/by-name/value yet"),
            ("GET", "no/such/route", "GET /no/such/route yet")]:
        with pytest.raises(ServerResponseError) as refused:
            once(client, method, path, params={"name": "a"})
        assert refused.value.response.status_code == 400
        assert refused.value.detail["reason"] == "not_implemented"
        assert refused.value.detail["message"].startswith("Sluice does not implement ")
        assert named in refused.value.detail["message"]
    assert refused.value.detail == {"reason": "not_implemented",
                                    "message": "Sluice does not implement GET /no/such/route yet"}


async def test_the_sdk_client_fails_at_once_on_a_route_sluice_does_not_implement(server, db):
    """A 5xx would be retried by the client for about 15 s; the 400 ends the call at once."""
    _, tis = await seed(db, "unknown2", "run-1", [("extract", -1)])
    client = client_for(server, tis[("extract", -1)])
    started = time.monotonic()
    with pytest.raises(ServerResponseError) as refused:
        client.get("no/such/route", params={"name": "a"})
    assert time.monotonic() - started < 2.0
    assert refused.value.response.status_code == 400
    assert refused.value.detail["message"] == "Sluice does not implement GET /no/such/route yet"


# --- task state store ----------------------------------------------------------------------
async def test_the_task_state_store_keeps_values_for_the_instance_across_its_tries(server, db):
    """As Airflow's ``routes/task_state_store.py``: what a try stores, a retry of the same
    instance reads (a KubernetesPodOperator's pod to reattach to); a missing key is the
    SDK's TASK_STORE_NOT_FOUND, another try's store 403."""
    _, tis = await seed(db, "stored", "run-1", [("pod", 0), ("pod", 1)])
    first = client_for(server, tis[("pod", 0)])
    first.task_state_store.set(tis[("pod", 0)], "pod/name", {"name": "p-0", "ns": "default"}, None)
    first.task_state_store.set(tis[("pod", 0)], "attempts", 1, None)
    first.task_state_store.set(tis[("pod", 0)], "attempts", 2, None)
    assert first.task_state_store.get(tis[("pod", 0)], "attempts").value == 2
    assert first.task_state_store.get(tis[("pod", 0)], "nothing").error.value == \
        "TASK_STORE_NOT_FOUND"
    with pytest.raises(ServerResponseError) as other:
        first.task_state_store.get(tis[("pod", 1)], "attempts")
    assert other.value.response.status_code == 403

    retry = await db.fetchval(  # the instance's next try: a new id, the same store
        "UPDATE task_instance SET uuid = gen_random_uuid(), try_number = try_number + 1 "
        "WHERE uuid = $1 RETURNING uuid", tis[("pod", 0)])
    second = client_for(server, retry)
    assert second.task_state_store.get(retry, "pod/name").value == {"name": "p-0", "ns": "default"}
    sibling = client_for(server, tis[("pod", 1)])  # map index 1 has a store of its own
    assert sibling.task_state_store.get(tis[("pod", 1)], "attempts").error.value == \
        "TASK_STORE_NOT_FOUND"
    second.task_state_store.delete(retry, "attempts")
    assert second.task_state_store.get(retry, "attempts").error.value == "TASK_STORE_NOT_FOUND"
    second.task_state_store.clear(retry)
    assert await db.fetchval("SELECT count(*) FROM task_state_store") == 0


# --- XComs ---------------------------------------------------------------------------------
async def test_xcoms_set_get_head_item_slice_and_delete(server, db):
    run_pk, tis = await seed(db, "xc", "run-1", [("extract", -1), ("load", 0), ("load", 1),
                                                 ("load", 2)])
    producer = tis[("extract", -1)]
    client = client_for(server, producer)
    start(client, producer)
    value = {"zeta": [1, 2], "alpha": {"y": 1, "b": None}, "mid": "é"}
    client.xcoms.set("xc", "run-1", "extract", "return_value", value, mapped_length=3)
    stored = await db.fetchval("SELECT value::text FROM xcom WHERE run_pk = $1", run_pk)
    assert list(json.loads(stored)) == ["zeta", "alpha", "mid"]
    task_map = await db.fetchrow("SELECT length, keys FROM task_map WHERE run_pk = $1", run_pk)
    assert (task_map["length"], task_map["keys"]) == (3, ["zeta", "alpha", "mid"])
    got = client.xcoms.get("xc", "run-1", "extract", "return_value")
    assert got.value == value and list(got.value) == ["zeta", "alpha", "mid"]
    assert client.xcoms.get("xc", "run-1", "extract", "absent").value is None

    for i in range(3):  # three mapped instances push their values
        ti = tis[("load", i)]
        start(client_for(server, ti), ti)
        client_for(server, ti).xcoms.set("xc", "run-1", "load", "return_value", i * 10,
                                         map_index=i)
    assert client.xcoms.head("xc", "run-1", "load", "return_value").len == 3
    assert client.xcoms.get("xc", "run-1", "load", "return_value", map_index=2).value == 20
    assert client.xcoms.get_sequence_item("xc", "run-1", "load", "return_value", 1).root == 10
    assert client.xcoms.get_sequence_item("xc", "run-1", "load", "return_value", -1).root == 20
    assert client.xcoms.get_sequence_item("xc", "run-1", "load", "return_value", 5).error.value \
        == "XCOM_NOT_FOUND"
    assert client.xcoms.get_sequence_slice("xc", "run-1", "load", "return_value",
                                           None, None, None).root == [0, 10, 20]
    for start_, stop, step in [(None, None, None), (None, None, -2), (None, 2, None),
                               (None, 2, -1), (None, -2, None), (None, -2, -1), (1, None, None),
                               (2, None, -1), (1, 2, None), (2, 1, -1), (1, -1, None),
                               (2, -2, -1), (-2, None, None), (-1, None, -1), (-2, -1, None),
                               (-1, -3, -1), (0, 2, 2), (1, 5, None), (0, None, 2),
                               (2, 1, None), (5, None, None), (1, 3, 5)]:  # Python's slicing
        assert client.xcoms.get_sequence_slice("xc", "run-1", "load", "return_value", start_,
                                               stop, step).root == [0, 10, 20][start_:stop:step]
    for offset in range(-3, 3):  # in map_index order, a negative one from the end
        assert client.xcoms.get_sequence_item("xc", "run-1", "load", "return_value",
                                              offset).root == [0, 10, 20][offset]
    with pytest.raises(ServerResponseError) as too_long:
        client.xcoms.set("xc", "run-1", "extract", "return_value", [0], mapped_length=2000)
    assert too_long.value.detail["reason"] == "unmappable_return_value_length"

    client_for(server, tis[("load", 1)]).xcoms.delete("xc", "run-1", "load", "return_value", 1)
    assert client.xcoms.head("xc", "run-1", "load", "return_value").len == 2
    with pytest.raises(ServerResponseError) as foreign:  # only the instance writes its own
        client.xcoms.set("xc", "run-1", "load", "return_value", 99, map_index=0)
    assert foreign.value.response.status_code == 403
    client.task_instances.succeed(producer, datetime.now(UTC), [], [], None)
    with pytest.raises(ServerResponseError) as ended:  # and only while its try runs
        client.xcoms.set("xc", "run-1", "extract", "late", 1)
    assert (ended.value.response.status_code, ended.value.detail["previous_state"]) == \
        (409, "success")


async def test_a_pushed_list_that_is_mapped_over_is_served_element_by_element(server, db):
    from airflow.sdk.execution_time.comms import GetXCom

    from worker.sdk_elements import Elements

    run_pk, tis = await seed(db, "xel", "run-1", [("extract", -1)])
    producer = tis[("extract", -1)]
    client = client_for(server, producer)
    start(client, producer)
    path = "sluice/xcom-elements/xel/run-1/extract"
    pull = GetXCom(key="return_value", dag_id="xel", run_id="run-1", task_id="extract")

    def element(index: int | None, **params) -> dict:
        where = path if index is None else f"{path}/{index}"
        return once(client, "GET", where, params={"key": "return_value", **params}).json()

    def push(value, mapped_length: int | None) -> None:
        client.xcoms.set("xel", "run-1", "extract", "return_value", value,
                         mapped_length=mapped_length)

    def missing(index: int | None) -> int:
        with pytest.raises(ServerResponseError) as none:
            element(index)
        return none.value.response.status_code

    value = [{"a": [1, None]}, "é", None, 2.5]
    push(value, 4)
    version = element(None)["version"]
    assert element(None) == {"length": 4, "version": version}
    assert [element(i) for i in range(5)] == [
        *({"length": 4, "version": version, "value": v} for v in value),
        {"length": 4, "version": version}]
    lazy = Elements.read(client, pull, 7)
    assert (len(lazy), list(lazy), lazy[-1], lazy[1:3]) == (4, value, 2.5, ["é", None])
    assert lazy[0] is lazy[0]
    with pytest.raises(IndexError):
        lazy[4]

    push(["a\x00b", "c"], 2)  # a NUL in a string: json keeps it (jsonb would refuse)
    assert element(0)["value"] == "a\x00b"
    lazy = Elements.read(client, pull, None)  # the list pushed again between two reads
    push([7, 8, 9], 3)
    assert element(0)["version"] != version
    lazy._whole = lambda: client.xcoms.get("xel", "run-1", "extract", "return_value").value
    assert (len(lazy), lazy[1]) == (2, 8)  # the new list, read whole, indexed
    with pytest.raises(IndexError):
        lazy[3]  # past the length first read
    for pushed, mapped_length in (({"k": 1}, 1), ([1, 2], None),  # a dict; not mapped over
                                  ([1, {"__classname__": "datetime.datetime",
                                        "__version__": 2, "__data__": {}}], 2)):
        push(pushed, mapped_length)
        assert (missing(0), missing(None)) == (404, 404)
    assert Elements.read(client, pull, 0) is None
    with pytest.raises(ServerResponseError) as invalid:
        element(0, map_index="x")
    assert invalid.value.response.status_code == 422  # FastAPI's own answer to the rest
    assert await db.fetchval("SELECT count(*) FROM xcom_element WHERE run_pk = $1", run_pk) == 0


async def test_a_fresh_start_lists_the_xcoms_left_by_an_earlier_try(server, db):
    run_pk, tis = await seed(db, "xclear", "run-1", [("extract", -1)], claim_by=None)
    ti = tis[("extract", -1)]
    await db.execute(q("put_xcoms"), run_pk, "extract", -1, ["return_value", "custom"],
                     ["1", "2"])
    assert start(client_for(server, ti), ti).xcom_keys_to_clear == ["custom", "return_value"]


# --- what a running task does to its run ---------------------------------------------------
async def test_rendered_map_index_and_skip_downstream(server, db):
    run_pk, tis = await seed(db, "branch", "run-1", [("extract", -1), ("load", 0), ("load", 1),
                                                     ("report", -1)], claim_by=None)
    branch = tis[("extract", -1)]
    client = client_for(server, branch)
    start(client, branch)
    await db.execute("UPDATE task_instance SET state = 'success' WHERE uuid = $1",
                     tis[("report", -1)])
    await db.execute("UPDATE task_instance SET state = NULL WHERE run_pk = $1 AND task_id = 'load'",
                     run_pk)
    client.task_instances.set_rendered_map_index(branch, "branch on Monday")
    client.task_instances.skip_downstream_tasks(branch, SkipDownstreamTasks(
        tasks=["load", ("report", -1)]))
    states = dict(await db.fetch("SELECT task_id || ':' || map_index, state FROM task_instance "
                                 "WHERE run_pk = $1", run_pk))
    assert states == {"extract:-1": "running", "load:0": "skipped", "load:1": "skipped",
                      "report:-1": "success"}
    assert (await ti_row(db, branch))["label"] == "branch on Monday"


async def test_counts_states_previous_instances_and_runs(server, db):
    day = timedelta(days=1)
    run_1, tis_1 = await seed(db, "history", "run-1", [("extract", -1), ("load", -1),
                                                       ("report", -1)], logical_date=NOW)
    run_2, tis_2 = await seed(db, "history", "run-2", [("extract", -1), ("load", 0),
                                                       ("load", 1)], logical_date=NOW + day)
    await db.execute("UPDATE task_instance SET state = 'success', start_date = $2, end_date = $3"
                     " WHERE run_pk = $1", run_1, NOW, NOW + timedelta(seconds=90))
    await db.execute("UPDATE task_instance SET state = NULL WHERE uuid = $1", tis_2[("load", 1)])
    await db.execute(q("finish_run"), run_1, "success", None)
    ti = tis_2[("extract", -1)]
    client = client_for(server, ti)
    instances = client.task_instances

    assert instances.get_count("history").count == 6
    assert instances.get_count("history", states=["success"]).count == 3
    assert instances.get_count("history", states=["null", "running"]).count == 3
    assert instances.get_count("history", task_group_id="etl").count == 4
    assert instances.get_count("history", run_ids=["run-2"], map_index=1).count == 1
    assert instances.get_count("history", logical_dates=[NOW]).count == 3
    states = instances.get_task_states("history", task_ids=["load"]).task_states
    assert states == {"run-1": {"load": "success"}, "run-2": {"load_0": "running", "load_1": None}}
    assert instances.get_task_states("history", task_group_id="etl.inner").task_states == \
        {"run-1": {"report": "success"}}
    with pytest.raises(ServerResponseError) as no_group:
        instances.get_count("history", task_group_id="nope")
    assert no_group.value.response.status_code == 404

    previous = instances.get_previous("history", "extract", logical_date=NOW + day).task_instance
    assert (previous.run_id, previous.state, previous.duration) == \
        ("run-1", "success", 90.0)
    assert instances.get_previous("history", "extract", logical_date=NOW).task_instance is None
    success = instances.get_previous_successful_dagrun(ti)
    assert (success.data_interval_start, success.end_date is not None) == (NOW, True)

    runs = client.dag_runs
    assert runs.get_state("history", "run-1").state.value == "success"
    detail = runs.get_detail("history", "run-2")
    assert (detail.run_type.value, detail.logical_date, detail.conf) == ("manual", NOW + day,
                                                                         {"k": 1})
    assert runs.get_count("history").count == 2
    assert runs.get_count("history", states=["running"]).count == 1
    assert runs.get_previous("history", NOW + day).dag_run.run_id == "run-1"
    assert runs.get_previous("history", NOW).dag_run is None
    with pytest.raises(ServerResponseError) as missing:
        runs.get_state("history", "run-9")
    assert missing.value.response.status_code == 404
    dag = client.dags.get("history")
    assert (dag.dag_id, dag.is_paused, dag.tags) == ("history", False, ["api"])


# --- variables and connections -------------------------------------------------------------
async def test_variables_are_encrypted_at_rest(server, db, api_home):
    _, tis = await seed(db, "secrets", "run-1", [("extract", -1)])
    client = client_for(server, tis[("extract", -1)])
    client.variables.set("db_password", "hunter2", description="prod")
    client.variables.set("db_user", "alice")
    client.variables.set("other", "x")

    key_file = api_home / "fernet.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    raw = await db.fetchrow("SELECT val, description FROM variable WHERE key = 'db_password'")
    assert "hunter2" not in raw["val"] and raw["description"] == "prod"
    assert Fernet(key_file.read_bytes()).decrypt(raw["val"].encode()) == b"hunter2"
    assert client.variables.get("db_password").value == "hunter2"
    assert client.variables.get("from_env").value == "env value"
    assert client.variables.get("missing").error.value == "VARIABLE_NOT_FOUND"
    keys = client.variables.keys(prefix="db_")
    assert (keys.keys, keys.total_entries) == (["db_password", "db_user"], 2)
    client.variables.delete("db_user")
    assert client.variables.keys(prefix="db_").keys == ["db_password"]


async def test_connections_are_decrypted_for_the_task_and_read_from_the_environment(
        server, db, api_home):
    _, tis = await seed(db, "secrets", "run-2", [("extract", -1)])
    client = client_for(server, tis[("extract", -1)])
    fernet = Fernet((api_home / "fernet.key").read_bytes())
    await db.execute(
        "INSERT INTO connection (conn_id, conn_type, host, schema, login, password, port, extra)"
        " VALUES ('warehouse', 'postgres', 'pg.internal', 'dw', 'etl', $1, 5432, $2)",
        fernet.encrypt(b"s3cret").decode(), fernet.encrypt(b'{"sslmode": "verify-full"}').decode())
    conn = client.connections.get("warehouse")
    assert (conn.conn_type, conn.host, conn.schema_, conn.login, conn.port) == \
        ("postgres", "pg.internal", "dw", "etl", 5432)
    assert (conn.password, json.loads(conn.extra)) == ("s3cret", {"sslmode": "verify-full"})
    raw = await db.fetchrow("SELECT password, extra FROM connection WHERE conn_id = 'warehouse'")
    assert "s3cret" not in raw["password"] and "verify-full" not in raw["extra"]
    from_env = client.connections.get("env_db")
    assert (from_env.host, from_env.login, from_env.password, from_env.port) == \
        ("db.example", "reader", "s@cret", 5433)
    assert client.connections.get("nope").error.value == "CONNECTION_NOT_FOUND"


# --- cross-DAG: a task triggers and resets another DAG's run, asks about other DAGs --------------
def post(client: Client, path: str, body: dict | None = None) -> httpx.Response:
    return once(client, "POST", path, content=json.dumps(body) if body is not None else None)


async def test_a_task_triggers_a_run_of_another_dag_and_resets_it(server, db, streams, prefix):
    """``TriggerDagRunOperator``'s calls, answered as Airflow's execution_api/routes/dag_runs.py."""
    from airflow.sdk.exceptions import ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse, OKResponse

    _, tis = await seed(db, "parent", "run-1", [("extract", -1)])
    await seed(db, "child", "seeded", [("extract", -1)], claim_by=None)
    client = client_for(server, tis[("extract", -1)])
    runs = client.dag_runs
    when = NOW + timedelta(days=30, microseconds=123)

    assert runs.trigger("child", "from-parent", conf={"a": [1, 2]}, logical_date=when,
                        note="by parent") == OKResponse(ok=True)
    row = await db.fetchrow("SELECT * FROM dag_run WHERE dag_id = 'child' AND run_id = $1",
                            "from-parent")
    assert (row["run_type"], row["state"], row["conf"], row["note"], row["logical_date"]) == \
        ("manual", "queued", {"a": [1, 2]}, "by parent", when)  # microseconds kept, as Airflow
    assert RunChanged(run_pk=row["id"]) in await messages(streams, prefix, "events")
    # Airflow infers the data interval from when the run was asked for, not its logical date
    # (the seeded DAG has no schedule: the interval is that moment)
    assert row["data_interval_start"] == row["data_interval_end"]
    assert row["data_interval_start"] > datetime.now(UTC) - timedelta(minutes=5)

    # the same run id again: 409 with Airflow's detail, which the SDK reports as a duplicate
    with pytest.raises(ServerResponseError) as exists:
        post(client, "dag-runs/child/from-parent", {"conf": {}})
    assert exists.value.response.status_code == 409
    assert exists.value.detail == {"reason": "already_exists", "message":
                                   "A run already exists for Dag 'child' with run_id 'from-parent'"}
    assert runs.trigger("child", "from-parent") == \
        ErrorResponse(error=ErrorType.DAGRUN_ALREADY_EXISTS)
    # Sluice: another run id at a logical date the DAG's manual runs already have is a 409 too
    with pytest.raises(ServerResponseError) as same_date:
        post(client, "dag-runs/child/other-id", {"logical_date": when.isoformat()})
    assert (same_date.value.response.status_code, same_date.value.detail) == (409, {
        "reason": "already_exists",
        "message": f"A run already exists for Dag 'child' at logical date '{when.isoformat()}'"})
    # a run with no logical date is dated when it is due (Airflow's run_after)
    runs.trigger("child", "undated", logical_date=None, run_after=when + timedelta(hours=1))
    assert await db.fetchval("SELECT logical_date FROM dag_run WHERE run_id = 'undated'") == \
        when + timedelta(hours=1)

    # reset_dag_run: the SDK clears the run after the 409, a queued one too (Airflow's
    # dag.clear in routes/dag_runs.py clears a run in any state), its conf kept
    assert runs.trigger("child", "from-parent", conf={"b": 2}, reset_dag_run=True) == \
        OKResponse(ok=True)
    again = await db.fetchrow("SELECT * FROM dag_run WHERE id = $1", row["id"])
    assert (again["state"], again["clear_number"], again["conf"]) == ("queued", 1, {"a": [1, 2]})
    await db.execute("UPDATE dag_run SET state = 'failed', end_date = now() WHERE id = $1",
                     row["id"])
    assert runs.trigger("child", "from-parent", reset_dag_run=True) == OKResponse(ok=True)
    again = await db.fetchrow("SELECT * FROM dag_run WHERE id = $1", row["id"])
    assert (again["state"], again["clear_number"]) == ("queued", 2)

    # a run id Airflow's allowed_run_id_pattern refuses (it names log folders): 400
    for bad, words in (("up..out", "must not contain '..' to prevent path traversal"),
                       ("semi;colon", "does not match regex pattern '^[A-Za-z0-9_.~:+-]+$'")):
        with pytest.raises(ServerResponseError) as refused:
            post(client, f"dag-runs/child/{bad}", {"conf": {}})
        assert refused.value.response.status_code == 400
        assert words in refused.value.detail["message"]
    assert await db.fetchval("SELECT count(*) FROM dag_run WHERE run_id IN "
                             "('up..out', 'semi;colon')") == 0

    # unknown DAG, unknown run, a DAG whose file does not import
    for path in ("dag-runs/nope/r", "dag-runs/nope/r/clear"):
        with pytest.raises(ServerResponseError) as missing:
            post(client, path, {} if not path.endswith("clear") else None)
        assert (missing.value.response.status_code, missing.value.detail) == (404, {
            "reason": "not_found", "message": "Dag with dag_id: 'nope' not found"})
    with pytest.raises(ServerResponseError) as no_run:
        post(client, "dag-runs/child/no-such-run/clear")
    assert (no_run.value.response.status_code, no_run.value.detail["message"]) == \
        (404, "Dag run with run_id: 'no-such-run' not found")
    await db.execute("INSERT INTO import_error (fileloc, message) VALUES ('/dags/child.py', 'x')")
    try:
        with pytest.raises(ServerResponseError) as broken:
            post(client, "dag-runs/child/new-run", {})
        assert (broken.value.response.status_code, broken.value.detail) == (400, {
            "reason": "import_errors",
            "message": "Dag with dag_id 'child' has import errors and cannot be triggered"})
    finally:
        await db.execute("DELETE FROM import_error WHERE fileloc = '/dags/child.py'")
    with pytest.raises(ServerResponseError) as partitioned:
        post(client, "dag-runs/child/partitioned", {"partition_key": "2026-01"})
    assert (partitioned.value.response.status_code, partitioned.value.detail["reason"]) == \
        (400, "not_implemented")
    assert "partitioned runs: 'partition_key'" in partitioned.value.detail["message"]
    # the payload is the SDK's model: unknown fields and naive dates are refused (422)
    for body in ({"conf": {}, "surprise": 1}, {"logical_date": "2026-01-01T00:00:00"}):
        with pytest.raises(ServerResponseError) as invalid:
            post(client, "dag-runs/child/bad-body", body)
        assert invalid.value.response.status_code == 422


async def test_counts_and_states_filter_as_airflows_routes(server, db):
    """Empty filters filter nothing; ``states`` with task ids *and* a group answers both
    sets, ``count`` their intersection (execution_api/routes/task_instances.py)."""
    _, tis = await seed(db, "other", "run-a", [("extract", -1), ("load", -1), ("report", 0),
                                               ("report", 1)], logical_date=NOW - timedelta(days=9))
    client = client_for(server, tis[("extract", -1)])
    instances = client.task_instances
    assert instances.get_count("other", task_ids=[], run_ids=[], logical_dates=[]).count == 4
    assert instances.get_count("other", task_ids=["extract"], task_group_id="etl").count == 0
    assert instances.get_count("other", task_ids=["load", "extract"],
                               task_group_id="etl").count == 1
    assert instances.get_task_states("other", task_ids=["extract"], task_group_id="etl.inner"
                                     ).task_states == {"run-a": {
                                         "extract": "running", "report_0": "running",
                                         "report_1": "running"}}
    assert instances.get_count("other", states=["null"]).count == 0
    for dag_id, message in (("other", "Task group nope not found in DAG other"),
                            ("nope", "The Dag with ID: `nope` was not found")):
        with pytest.raises(ServerResponseError) as unknown:
            instances.get_task_states(dag_id, task_group_id="nope")
        assert (unknown.value.response.status_code, unknown.value.detail["message"]) == \
            (404, message)
    assert client.dag_runs.get_count("other", states=[], run_ids=[]).count == 1
    assert instances.get_previous("other", "extract", state="running").task_instance.run_id == \
        "run-a"
    assert client.dag_runs.get_previous("other", NOW, state="running").dag_run.run_id == "run-a"
    for path, params in (("task-instances/previous/other/extract", {"state": "bogus"}),
                         ("dag-runs/previous", {"dag_id": "other", "logical_date": NOW.isoformat(),
                                                "state": "bogus"})):
        with pytest.raises(ServerResponseError) as bad_state:
            once(client, "GET", path, params=params)
        assert bad_state.value.response.status_code == 422
    for path, params in (("task-instances/count", {"dag_id": "other"}),
                         ("dag-runs/count", {"dag_id": "other"})):
        with pytest.raises(ServerResponseError) as naive:
            once(client, "GET", path, params={**params, "logical_dates": "2026-03-01T12:00:00"})
        assert naive.value.response.status_code == 422


async def test_a_claim_answers_what_the_start_call_would(server, db):
    """A worker's slots skip the start call: the claim's answer (worker.daemon.start_context)
    must be the ``TIRunContext`` the API answers for the same try."""
    from worker.daemon import start_context

    _, tis = await seed(db, "claimed_start", "run-1", [("extract", -1)], claim_by=None)
    ti = tis[("extract", -1)]
    row = await ti_row(db, ti)
    [claimed] = await db.fetch(q("claim_tis"), [row["id"]], [row["try_number"]], WORKER,
                               "host-a", "user-a")
    from_claim = await start_context(db, claimed)
    stored = await ti_row(db, ti)
    assert (stored["state"], stored["hostname"], stored["unixname"]) == ("running", "host-a",
                                                                        "user-a")
    from_api = start(client_for(server, ti), ti).model_dump(mode="json", by_alias=True)
    assert from_claim == from_api
