"""Triggers that ask the server (``TriggerComms`` on PostgreSQL), and rows the scheduler
writes for ``start_from_trigger`` (the DAG file's values, rendered, in Sluice's JSON)."""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from airflow.providers.standard.triggers.external_task import DagStateTrigger, WorkflowTrigger
from airflow.sdk import Connection, Variable
from airflow.sdk.exceptions import AirflowRuntimeError
from airflow.sdk.execution_time import task_runner
from airflow.sdk.execution_time.comms import GetXCom
from asgiref.sync import sync_to_async
from cryptography.fernet import Fernet

from shared.db import create_pool, q
from shared.secrets import Secrets
from tests.sdk.test_airflow_triggers import DAGS, Recorder, deferral, resumed, row_of, sent_by_sdk
from triggerer.airflow_triggers import (
    Fired,
    TriggerComms,
    first_event,
    load_trigger,
    next_kwargs_with_event,
)

SECRETS = Secrets(Fernet.generate_key().decode())
TASKS = ["extract", "load"]


@pytest.fixture(autouse=True)
def dags_on_path():
    sys.path.insert(0, str(DAGS))
    yield
    sys.path.remove(str(DAGS))


@pytest.fixture
async def comms(db_url):
    """``SUPERVISOR_COMMS`` answered from this test's database, as the triggerer installs it."""
    pool = await create_pool(db_url)
    missing = object()
    before = getattr(task_runner, "SUPERVISOR_COMMS", missing)
    yield TriggerComms(pool, SECRETS).install()
    if before is missing:  # absent, not None: Airflow tests hasattr() to know it runs in a task
        del task_runner.SUPERVISOR_COMMS
    else:
        task_runner.SUPERVISOR_COMMS = before
    await pool.close()


async def a_run(pool, dag_id: str, states: dict[str, str | None], run_state: str = "running") -> str:
    """A run of ``dag_id`` whose instances are in ``states``; its run_id."""
    spec = {"dag_id": dag_id, "fileloc": f"/dags/{dag_id}.py", "tasks": [
        {"task_id": t, "operator": "EmptyOperator", "upstream": [], "downstream": [],
         "group_id": "etl"} for t in TASKS]}
    await pool.fetchrow(q("upsert_dag"), dag_id, f"/dags/{dag_id}.py", "hash", spec, False)
    run_id = f"run-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    run_pk = await pool.fetchval(q("insert_run"), dag_id, run_id, "manual", now, now, now, {})
    await pool.execute(q("start_run"), run_pk)
    await pool.execute(q("insert_tis"), run_pk, list(states), [-1] * len(states),
                       [0] * len(states), ["default"] * len(states),
                       ["default_pool"] * len(states), [1] * len(states), [1] * len(states))
    for task_id, state in states.items():
        await pool.execute("UPDATE task_instance SET state = $3 WHERE run_pk = $1 AND task_id = $2",
                           run_pk, task_id, state)
    await pool.execute("UPDATE dag_run SET state = $2 WHERE id = $1", run_pk, run_state)
    return run_id


async def test_workflow_trigger_counts_task_states_from_a_thread(comms):
    """``WorkflowTrigger`` calls ``get_ti_count`` through ``sync_to_async`` (another thread)."""
    done = await a_run(comms.pool, "upstream", {"extract": "success", "load": "success"})
    pending = await a_run(comms.pool, "upstream", {"extract": "success", "load": "running"})
    failed = await a_run(comms.pool, "upstream", {"extract": "failed", "load": "failed"})

    async def status(run_id: str, **kwargs) -> str:
        trigger = WorkflowTrigger(external_dag_id="upstream", run_ids=[run_id],
                                  allowed_states=["success"], failed_states=["failed"],
                                  poke_interval=0.05, **kwargs)
        outcome = await first_event(trigger, datetime.now(UTC) + timedelta(seconds=0.5))
        return outcome.event.payload["status"] if isinstance(outcome, Fired) else outcome.reason

    assert await status(done, external_task_ids=TASKS) == "success"
    assert await status(pending, external_task_ids=TASKS) == "Trigger timeout"
    assert await status(failed, external_task_ids=TASKS) == "failed"
    assert await status(done, external_task_group_id="etl") == "success"
    assert await status(pending, external_task_group_id="etl") == "Trigger timeout"
    assert await status(done) == "Trigger timeout"  # the run itself is still running


async def test_dag_state_trigger_event_is_a_tuple_the_task_gets_back(comms):
    run_id = await a_run(comms.pool, "triggered", {"extract": "success"}, run_state="success")
    op = Recorder(task_id="t", trigger=DagStateTrigger(dag_id="triggered", states=["success"],
                                                       run_ids=[run_id], poll_interval=0.05))
    row = row_of(sent_by_sdk(op, deferral(op)))
    outcome = await first_event(load_trigger(row), datetime.now(UTC) + timedelta(seconds=5))
    got = resumed(op, "execute_complete",
                  next_kwargs_with_event(row["next_kwargs"], outcome.event.payload))
    classpath, data = got["event"]
    assert classpath == "airflow.providers.standard.triggers.external_task.DagStateTrigger"
    assert data["run_ids"] == [run_id] and data[run_id] == "success"


async def test_a_sync_sdk_call_inside_async_run_is_answered_through_the_portal(comms):
    """A trigger calling ``RuntimeTaskInstance.get_dr_count`` straight from ``async def run()``."""
    import custom_triggers

    first = await a_run(comms.pool, "counted", {"extract": "success", "load": "success"})
    second = await a_run(comms.pool, "counted", {"extract": "success", "load": "failed"})
    trigger = custom_triggers.CountingTrigger("counted", [first, second, "no-such-run"])
    outcome = await first_event(trigger, datetime.now(UTC) + timedelta(seconds=5))
    assert outcome.event.payload == {"runs": 2, "successful_tis": 3}


async def test_variables_and_connections_come_from_the_encrypted_tables(comms):
    await comms.pool.execute(q("api_variable_set"), "greeting", SECRETS.encrypt("hello"), None)
    await comms.pool.execute(
        "INSERT INTO connection (conn_id, conn_type, host, login, password, port, extra) "
        "VALUES ('warehouse', 'postgres', 'db.example', 'reader', $1, 5432, $2)",
        SECRETS.encrypt("s3cr3t"), SECRETS.encrypt('{"sslmode": "require"}'))

    assert await sync_to_async(Variable.get)("greeting") == "hello"
    assert await sync_to_async(Variable.get)("absent", default="fallback") == "fallback"
    conn = await Connection.async_get("warehouse")
    assert (conn.host, conn.login, conn.password, conn.port) == \
        ("db.example", "reader", "s3cr3t", 5432)
    assert conn.extra_dejson == {"sslmode": "require"}


async def test_a_request_sluice_does_not_answer_is_an_error_naming_it_never_a_hang(comms):
    with pytest.raises(AirflowRuntimeError, match="does not answer GetXCom"):
        await comms.asend(GetXCom(key="k", dag_id="d", run_id="r", task_id="t"))
    with pytest.raises(AirflowRuntimeError, match="'nope' and run_id 'r' was not found"):
        await sync_to_async(task_runner.RuntimeTaskInstance.get_dagrun_state)("nope", "r")


# --- start_from_trigger rows ---------------------------------------------------------------
def scheduler_rows(run_id: str) -> list[dict]:
    """The trigger rows the scheduler writes for each index of ``echo`` (its own code path)."""
    from scheduler.start_trigger import render, run_context, start_args
    from shared.airflow_spec import parse
    from shared.serialization import DagSpec

    [parsed] = parse(DAGS / "start_in_triggerer.py", DAGS, sluice_home=Path(tempfile.mkdtemp()))
    assert parsed["error"] is None, parsed["error"]
    spec = DagSpec.model_validate(parsed["dags"][0])
    rows = []
    for map_index in (0, 1):
        args = start_args(spec.task("echo"), map_index)
        ctx = run_context(spec.dag_id, run_id, datetime(2026, 3, 1, tzinfo=UTC), {}, spec.params,
                          "echo", map_index)
        rows.append({"classpath": args.classpath, "dag_id": spec.dag_id, "task_id": "echo",
                     "map_index": map_index, "kwargs": json.dumps(render(args.trigger_kwargs, ctx)),
                     "next_kwargs": json.loads(json.dumps(render(args.next_kwargs, ctx)))})
    return rows


async def test_start_from_trigger_rows_run_the_dag_folder_trigger_and_resume_with_python_values():
    from start_in_triggerer import Echo

    rows = scheduler_rows("run-7")
    triggers = [load_trigger(r) for r in rows]
    assert [(t.label, t.delay) for t in triggers] == \
        [("zero 0", timedelta(milliseconds=20)), ("one", timedelta(milliseconds=30))]
    assert triggers[0].when is None and triggers[1].when == datetime(2027, 5, 6, tzinfo=UTC)

    op = Echo(task_id="echo")
    for row, trigger in zip(rows, triggers, strict=True):
        event = (await first_event(trigger)).event
        got = resumed(op, "execute_complete", next_kwargs_with_event(row["next_kwargs"],
                                                                     event.payload))
        assert got["note"] == "n" and got["since"] == datetime(2026, 1, 1, tzinfo=UTC)
        assert got["event"]["label"] == trigger.label and got["event"]["pair"] == (1, "two")
        assert got["event"]["delay"] == trigger.delay and got["event"]["when"] == trigger.when

