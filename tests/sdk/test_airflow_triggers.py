"""Airflow's trigger classes as Sluice's triggerer runs them (``triggerer.airflow_triggers``).

Each round trip starts where Airflow's SDK starts (a task's ``defer()`` turned into the
``DeferTask`` the SDK sends), decodes the stored row, runs the trigger for real, writes
the event into ``next_kwargs`` and ends in the SDK's own resume code
(``task_runner._execute_task``), which hands ``execute_complete`` its ``event``.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pendulum
import pytest
import structlog
from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
from airflow.providers.standard.triggers.file import FileTrigger
from airflow.providers.standard.triggers.temporal import DateTimeTrigger, TimeDeltaTrigger
from airflow.sdk import BaseOperator
from airflow.sdk.api.datamodels._generated import TIDeferredStatePayload, TIRunContext
from airflow.sdk.bases.xcom import BaseXCom
from airflow.sdk.exceptions import TaskDeferralError, TaskDeferralTimeout, TaskDeferred
from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance, _defer_task, _execute_task
from airflow.sdk.serde import serialize

from shared.db import create_pool, q
from triggerer.airflow_triggers import (
    FAIL_METHOD,
    TRIGGER_FAILURE,
    TRIGGER_TIMEOUT,
    Failed,
    Fired,
    TriggerLoadError,
    decode_kwargs,
    failure_next_kwargs,
    first_event,
    is_task_end,
    load_trigger,
    next_kwargs_with_event,
    task_end,
)
from worker.execution_api.task_instances import defer

DAGS = Path(__file__).parent / "dags_triggers"
WORKER = "worker-of-triggers"
LOG = structlog.get_logger()


@pytest.fixture(autouse=True)
def dags_on_path():
    """The DAG folder is on ``sys.path`` in the triggerer, as in Airflow."""
    sys.path.insert(0, str(DAGS))
    yield
    sys.path.remove(str(DAGS))


def custom():
    import custom_triggers

    return custom_triggers


# --- the SDK's two ends --------------------------------------------------------------------
def deferral(op: BaseOperator, context=None) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context or {})
    return deferred.value


def sent_by_sdk(op: BaseOperator, deferred: TaskDeferred) -> TIDeferredStatePayload:
    """The deferral as the SDK sends it (``_defer_task`` then the client's body) and the API reads it."""
    ti = RuntimeTaskInstance.model_construct(id=uuid.uuid4(), task_id=op.task_id, dag_id="d",
                                             run_id="r", try_number=1, map_index=-1, task=op)
    msg, state = _defer_task(deferred, ti, LOG)
    assert state == "deferred"
    body = TIDeferredStatePayload(**msg.model_dump(exclude_unset=True, exclude={"type"}))
    return TIDeferredStatePayload.model_validate_json(body.model_dump_json())


def row_of(payload: TIDeferredStatePayload, **ids) -> dict:
    """A trigger row as Sluice's API stores it (kwargs JSON text, next_kwargs parsed)."""
    return {"id": 7, "classpath": payload.classpath, "kwargs": json.dumps(payload.trigger_kwargs),
            "next_kwargs": payload.next_kwargs, "trigger_timeout": None, "dag_id": "d",
            "run_id": "r", "task_id": "t", "map_index": -1, "try_number": 1, **ids}


def resumed(op: BaseOperator, next_method: str, next_kwargs_json: str):
    """What the SDK's own resume path returns for the stored next_kwargs (a worker's try)."""
    context = TIRunContext.model_construct(next_method=next_method,
                                           next_kwargs=json.loads(next_kwargs_json))
    ti = RuntimeTaskInstance.model_construct(id=uuid.uuid4(), task_id=op.task_id, dag_id="d",
                                             run_id="r", try_number=1, map_index=-1, task=op,
                                             _ti_context_from_server=context)
    return _execute_task({}, ti, LOG)


class Recorder(BaseOperator):
    """Defers to the trigger it is given; ``execute_complete`` returns what it received."""

    def __init__(self, *, trigger, defer_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        self.trigger, self.defer_kwargs = trigger, defer_kwargs

    def execute(self, context):
        self.defer(trigger=self.trigger, method_name="execute_complete", kwargs=self.defer_kwargs)

    def execute_complete(self, context, event=None, **kwargs):
        return {"event": event, **kwargs}


class RecordingSensor(DateTimeSensorAsync):
    def execute_complete(self, context, event=None):
        super().execute_complete(context, event)
        return event


async def fired(row: dict) -> Fired:
    outcome = await first_event(load_trigger(row), row.get("trigger_timeout"))
    assert isinstance(outcome, Fired), outcome
    return outcome


# --- round trips with the standard provider's triggers -------------------------------------
async def test_date_time_sensor_async_defers_and_resumes_with_its_moment_through_postgres(db_url):
    """DateTimeSensorAsync end to end on the tables: the SDK's DeferTask written by the API's
    defer, the row loaded as the triggerer loads it, the event written as first events are."""
    moment = datetime.now(UTC) + timedelta(milliseconds=300)
    op = RecordingSensor(task_id="wait", target_time=moment)
    payload = sent_by_sdk(op, deferral(op))
    pool = await create_pool(db_url)
    try:
        ti_uuid = await running_ti(pool, "sensing", "wait")
        api = SimpleNamespace(pool=pool, settings=SimpleNamespace(worker_id=WORKER))
        assert await defer(api, ti_uuid, payload) is not None
        ids = [r["id"] for r in await pool.fetch("SELECT id FROM trigger")]
        row = {**dict((await pool.fetch(q("load_triggers"), ids))[0]), "ti_uuid": ti_uuid}

        trigger = load_trigger(row)
        assert isinstance(trigger, DateTimeTrigger) and trigger.moment == moment
        assert trigger.task_instance.id == ti_uuid and trigger.trigger_id == row["id"]
        event = (await first_event(trigger)).event
        assert datetime.now(UTC) >= moment
        resumed_with = await pool.fetch(q("resume_fired_tis"), [row["ti_id"]], [row["id"]],
                                        [next_kwargs_with_event(row["next_kwargs"], event.payload)])
        assert len(resumed_with) == 1
        ti = await pool.fetchrow("SELECT state, next_method, next_kwargs::text AS nk "
                                 "FROM task_instance WHERE uuid = $1", ti_uuid)
    finally:
        await pool.close()
    assert (ti["state"], ti["next_method"]) == ("scheduled", "execute_complete")
    got = resumed(op, ti["next_method"], ti["nk"])
    assert isinstance(got, pendulum.DateTime) and got == moment


async def test_time_delta_trigger_event_reaches_execute_complete_as_a_datetime():
    op = Recorder(task_id="t", trigger=TimeDeltaTrigger(timedelta(milliseconds=100)),
                  defer_kwargs={"since": date(2026, 1, 2), "limit": Decimal("1.5")})
    deferred = deferral(op)
    row = row_of(sent_by_sdk(op, deferred))
    assert row["classpath"] == "airflow.providers.standard.triggers.temporal.DateTimeTrigger"

    event = (await fired(row)).event
    got = resumed(op, "execute_complete", next_kwargs_with_event(row["next_kwargs"], event.payload))
    assert got == {"event": deferred.trigger.moment, "since": date(2026, 1, 2),
                   "limit": Decimal("1.5")}
    assert isinstance(got["event"], datetime)


async def test_file_trigger_fires_when_the_file_appears(tmp_path):
    target = tmp_path / "landing" / "data.csv"
    op = Recorder(task_id="t", trigger=FileTrigger(filepath=str(target), poke_interval=0.05))
    row = row_of(sent_by_sdk(op, deferral(op)))
    trigger = load_trigger(row)
    assert isinstance(trigger, FileTrigger) and trigger.filepath == str(target)

    import anyio

    async def land():
        await anyio.sleep(0.2)
        target.parent.mkdir()
        target.write_text("a,b\n")

    async with anyio.create_task_group() as tg:
        tg.start_soon(land)
        outcome = await first_event(trigger)
    assert resumed(op, "execute_complete",
                   next_kwargs_with_event(row["next_kwargs"], outcome.event.payload)) == {"event": True}


async def test_date_time_trigger_ending_the_task_gives_success_without_a_worker():
    op = Recorder(task_id="t", trigger=DateTimeTrigger(moment=datetime.now(UTC),
                                                       end_from_trigger=True))
    event = (await fired(row_of(sent_by_sdk(op, deferral(op))))).event
    assert is_task_end(event)
    assert task_end(event, retries_left=True) == task_end(event, retries_left=False)
    assert task_end(event, retries_left=True).state == "success"
    assert task_end(event, retries_left=True).xcoms == {}


# --- a trigger class from the DAG folder ---------------------------------------------------
async def test_a_dag_folder_trigger_round_trips_tuples_sets_and_datetimes():
    mod = custom()
    when = datetime(2026, 7, 1, 12, 30, tzinfo=UTC)
    op = Recorder(task_id="t", trigger=mod.EchoTrigger("echo", timedelta(milliseconds=50), when),
                  defer_kwargs={"window": (1, 2)})
    row = row_of(sent_by_sdk(op, deferral(op)))
    assert row["classpath"] == "custom_triggers.EchoTrigger"
    trigger = load_trigger(row)
    assert (trigger.label, trigger.delay, trigger.when) == ("echo", timedelta(milliseconds=50), when)

    event = (await first_event(trigger)).event
    assert "echo" in mod.CLEANED  # cleanup ran after the first event
    got = resumed(op, "execute_complete", next_kwargs_with_event(row["next_kwargs"], event.payload))
    assert got == {"event": {"label": "echo", "when": when, "delay": timedelta(milliseconds=50),
                             "pair": (1, "two"), "tags": {"a"}},
                   "window": (1, 2)}


async def test_task_success_event_gives_the_state_and_xcoms_the_sdk_reads_back():
    mod = custom()
    event = (await fired(row_of(sent_by_sdk(*_op_and(mod.EndTrigger()))))).event
    end = task_end(event, retries_left=True)
    assert end.state == "success"
    assert {k: BaseXCom.deserialize_value(SimpleNamespace(value=json.loads(v)))
            for k, v in end.xcoms.items()} == {"return_value": {"rows": [1, 2]},
                                               "note": "from trigger"}


async def test_task_failed_event_retries_when_tries_are_left_and_pushes_no_xcoms():
    mod = custom()
    event = (await fired(row_of(sent_by_sdk(*_op_and(mod.EndTrigger(fail=True)))))).event
    assert task_end(event, retries_left=True).state == "up_for_retry"
    assert task_end(event, retries_left=True).xcoms == {}
    last = task_end(event, retries_left=False)
    assert (last.state, json.loads(last.xcoms["why"])) == ("failed", "upstream gone")


def _op_and(trigger):
    op = Recorder(task_id="t", trigger=trigger)
    return op, deferral(op)


# --- failures: the worker raises, retry rules apply ----------------------------------------
async def test_a_trigger_that_raises_resumes_the_task_with_fail_and_its_traceback():
    mod = custom()
    op, deferred = _op_and(mod.FailingTrigger("raising"))
    outcome = await first_event(load_trigger(row_of(sent_by_sdk(op, deferred))))
    assert isinstance(outcome, Failed) and outcome.reason == TRIGGER_FAILURE
    assert "raising" in mod.CLEANED

    kwargs = failure_next_kwargs(outcome.reason, outcome.error)
    assert kwargs["error"] == "Trigger failure"
    assert kwargs["traceback"][-1] == "ValueError: Deliberate trigger failure\n"
    with pytest.raises(TaskDeferralError, match="Trigger failure"):
        resumed(op, FAIL_METHOD, json.dumps(kwargs))


async def test_a_trigger_that_ends_without_an_event_fails_without_a_traceback():
    mod = custom()
    op, deferred = _op_and(mod.SilentTrigger())
    outcome = await first_event(load_trigger(row_of(sent_by_sdk(op, deferred))))
    assert outcome == Failed(TRIGGER_FAILURE, None)
    assert failure_next_kwargs(outcome.reason, outcome.error) == {"error": "Trigger failure",
                                                                  "traceback": None}


async def test_a_trigger_past_its_timeout_fails_with_trigger_timeout_and_cleans_up():
    mod = custom()
    op, deferred = _op_and(mod.SleepyTrigger("sleepy-timeout"))
    row = row_of(sent_by_sdk(op, deferred),
                 trigger_timeout=datetime.now(UTC) + timedelta(milliseconds=100))
    outcome = await first_event(load_trigger(row), row["trigger_timeout"])
    assert outcome == Failed(TRIGGER_TIMEOUT, None)
    assert "sleepy-timeout" in mod.CLEANED
    with pytest.raises(TaskDeferralTimeout):
        resumed(op, FAIL_METHOD, json.dumps(failure_next_kwargs(outcome.reason, None)))


def test_a_trigger_class_that_cannot_be_imported_names_class_and_instance():
    row = {"classpath": "fake.NoSuchTrigger", "kwargs": "{}", "dag_id": "sales",
           "task_id": "wait", "map_index": 3}
    with pytest.raises(TriggerLoadError) as refused:
        load_trigger(row)
    assert str(refused.value) == (
        "cannot import trigger class 'fake.NoSuchTrigger' for DAG 'sales' task 'wait' "
        "map_index 3: ModuleNotFoundError: No module named 'fake'")
    kwargs = failure_next_kwargs(TRIGGER_FAILURE, refused.value.__cause__)
    assert kwargs["traceback"][-1] == "ModuleNotFoundError: No module named 'fake'\n"
    missing = {**row, "classpath": "custom_triggers.Nowhere"}
    with pytest.raises(TriggerLoadError, match="custom_triggers.Nowhere.*map_index 3"):
        load_trigger(missing)


def test_kwargs_the_class_does_not_take_are_refused_without_their_values():
    row = {"classpath": "custom_triggers.FailingTrigger", "dag_id": "d", "task_id": "t",
           "map_index": -1, "kwargs": json.dumps(serialize({"not_exists_arg": "s3cr3t"}))}
    with pytest.raises(TriggerLoadError) as refused:
        load_trigger(row)
    assert "cannot construct trigger 'custom_triggers.FailingTrigger' for DAG 'd' task 't'" \
        in str(refused.value)
    assert "unexpected keyword argument 'not_exists_arg'" in str(refused.value)
    assert "s3cr3t" not in str(refused.value)


def test_an_undecodable_payload_is_unresumable_with_airflows_reason():
    from triggerer.airflow_triggers import Unresumable

    with pytest.raises(Unresumable, match="the event payload could not be serialized"):
        next_kwargs_with_event({}, object())
    with pytest.raises(Unresumable, match="stored next_kwargs could not be decoded"):
        next_kwargs_with_event({"__classname__": "no.such.Class", "__version__": 0,
                                "__data__": 1}, 42)
    assert json.loads(next_kwargs_with_event({"cheesecake": True}, 42)) == \
        {"cheesecake": True, "event": 42}


def test_older_base_serialization_kwargs_still_decode():
    """Rows written by ``BaseSerialization`` (Airflow's start_trigger_args encoding) decode too."""
    from airflow.serialization.serialized_objects import BaseSerialization

    moment = datetime(2026, 5, 1, tzinfo=UTC)
    stored = BaseSerialization.serialize({"moment": moment, "end_from_trigger": False})
    assert decode_kwargs(json.dumps(stored)) == {"moment": moment, "end_from_trigger": False}


# --- helpers over the tables ---------------------------------------------------------------
async def running_ti(pool, dag_id: str, task_id: str) -> uuid.UUID:
    """A running try of ``task_id`` in a new run of ``dag_id``, claimed by :data:`WORKER`."""
    spec = {"dag_id": dag_id, "fileloc": f"/dags/{dag_id}.py", "tasks": [
        {"task_id": task_id, "operator": "RecordingSensor", "upstream": [], "downstream": []}]}
    now = datetime.now(UTC)
    await pool.fetchrow(q("upsert_dag"), dag_id, f"/dags/{dag_id}.py", "hash", spec, False)
    run_pk = await pool.fetchval(q("insert_run"), dag_id, f"run-{uuid.uuid4().hex[:6]}",
                                 "manual", now, now, now, {})
    await pool.execute(q("start_run"), run_pk)
    await pool.execute(q("insert_tis"), run_pk, [task_id], [-1], [0], ["default"],
                       ["default_pool"], [1], [1])
    ids = [r["id"] for r in await pool.fetch(
        "SELECT id FROM task_instance WHERE run_pk = $1", run_pk)]
    queued = await pool.fetch(q("queue_tis"), ids)
    await pool.fetch(q("claim_tis"), [r["id"] for r in queued], [r["try_number"] for r in queued],
                     WORKER, None, None)
    return await pool.fetchval("SELECT uuid FROM task_instance WHERE run_pk = $1", run_pk)


# --- the greenback portal: only for triggers that may need it -----------------------------
async def test_datetime_trigger_fires_without_a_portal_its_subclasses_get_one(monkeypatch):
    """A sleeping ``DateTimeTrigger`` (and so ``TimeDeltaTrigger``'s rows) never calls the
    SDK's sync methods: it runs without a portal (~0.5 KB a sleeping trigger); a subclass may
    call anything, so it keeps the portal Airflow gives."""
    import greenback

    from triggerer import airflow_triggers

    class Stamped(DateTimeTrigger):
        async def run(self):
            async for event in super().run():
                yield event.__class__({"portal": greenback.has_portal()})

    soon = datetime.now(UTC) + timedelta(milliseconds=50)
    entered: list[bool] = []
    run_with_portal = airflow_triggers.portal.run_with_portal

    def recorded(coro):
        entered.append(True)
        return run_with_portal(coro)

    monkeypatch.setattr(airflow_triggers.portal, "run_with_portal", recorded)
    assert not airflow_triggers.needs_portal(DateTimeTrigger(soon))
    assert not airflow_triggers.needs_portal(TimeDeltaTrigger(timedelta(seconds=1)))
    assert airflow_triggers.needs_portal(Stamped(soon))
    outcome = await first_event(DateTimeTrigger(soon), datetime.now(UTC) + timedelta(seconds=5))
    assert isinstance(outcome, Fired) and entered == []
    outcome = await first_event(Stamped(soon), datetime.now(UTC) + timedelta(seconds=5))
    assert outcome.event.payload == {"portal": True} and entered == [True]
