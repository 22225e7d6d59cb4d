"""Airflow's own trigger classes in Sluice's triggerer: the pure pieces.

A trigger row is read the way Airflow 3.3's triggerer reads it: the class imported by
its path (Airflow core, providers, or a module in the DAG folder, which is on
``sys.path``), the kwargs decoded with the SDK's serde (``BaseSerialization`` as the
fallback, then ``smart_decode_trigger_kwargs``), as ``Trigger._decrypt_kwargs`` and
``TriggerRunner.create_triggers`` do. Rows the scheduler writes for
``start_from_trigger`` carry the DAG file's values in Sluice's tagged JSON
(``shared.serde``), which is decoded first, so a trigger gets the same Python
values either way.

A first event resumes the instance with ``next_kwargs = {**next_kwargs, "event":
payload}`` encoded with the SDK's serde, as ``handle_event_submit`` does, so the SDK's
resume path (``task_runner._execute_task``) hands ``execute_complete`` the very value
the trigger yielded. No pickle anywhere.
"""

from __future__ import annotations

import asyncio
import json
import threading
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from traceback import format_exception
from typing import Any

import anyio
import structlog
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason

# imported with this module, never first inside the event loop (it takes seconds)
from airflow.serialization.decoders import smart_decode_trigger_kwargs

from shared.serde import from_jsonable
from shared.textcap import MAX_ERROR_CHARS, cap_error
from triggerer import portal

log = structlog.get_logger()

FAIL_METHOD = TRIGGER_FAIL_REPR  # next_method of an instance the worker must fail
TRIGGER_FAILURE = TriggerFailureReason.TRIGGER_FAILURE.value
TRIGGER_TIMEOUT = TriggerFailureReason.TRIGGER_TIMEOUT.value
_DECODE_ERRORS = (ImportError, KeyError, AttributeError, TypeError)  # serde's: BaseSerialization next


class TriggerLoadError(Exception):
    """A trigger row that cannot become a trigger; the one-line message names class and task.

    The cause (``__cause__``) is the import, decode or constructor error itself.
    """


class Unresumable(Exception):
    """An event that cannot be written into the instance's ``next_kwargs`` (Airflow's wording)."""


def where(row: dict) -> str:
    """``DAG 'd' task 't' map_index 3`` for messages about a trigger row's instance."""
    return f"DAG {row.get('dag_id')!r} task {row.get('task_id')!r} map_index {row.get('map_index')}"


# --- a row into a trigger ------------------------------------------------------------------
@cache
def trigger_class(classpath: str) -> type:
    """The class at ``classpath``, imported once (a failed import is retried next time)."""
    from airflow.sdk._shared.module_loading import import_string

    return import_string(classpath)


def _decode(data: Any) -> Any:
    """Stored JSON into Python values: serde first, ``BaseSerialization`` for older shapes."""
    from airflow.sdk.serde import deserialize

    try:
        return deserialize(data)
    except _DECODE_ERRORS:
        from airflow.serialization.serialized_objects import BaseSerialization

        return BaseSerialization.deserialize(data)


def decode_kwargs(stored: str | dict) -> dict[str, Any]:
    """A trigger row's kwargs (JSON text or its parsed value) as the trigger's keyword arguments."""
    data = json.loads(stored) if isinstance(stored, str) else stored
    if not isinstance(data, dict):
        raise TypeError(f"trigger kwargs are a JSON {type(data).__name__}, not an object "
                        "(kwargs encrypted by the task are not supported)")
    kwargs = _decode(from_jsonable(data))
    if not isinstance(kwargs, dict):
        raise TypeError(f"trigger kwargs decoded to {type(kwargs).__name__}, not a dict")
    return {k: smart_decode_trigger_kwargs(v) for k, v in kwargs.items()}


def load_trigger(row: dict):
    """The live ``BaseTrigger`` of a trigger row, its ids set as Airflow's triggerer sets them.

    ``row`` has ``classpath`` and ``kwargs`` (as stored), and for messages and the trigger's
    ``task_instance`` ``id``, ``dag_id``, ``run_id``, ``task_id``, ``map_index``,
    ``try_number``, ``trigger_timeout`` and, when known, ``ti_uuid``. Raises
    :class:`TriggerLoadError` (never with the kwargs' values in its message).
    """
    classpath = row["classpath"]
    try:
        cls = trigger_class(classpath)
    except (Exception, SystemExit) as exc:
        raise TriggerLoadError(f"cannot import trigger class {classpath!r} for {where(row)}: "
                               f"{type(exc).__name__}: {exc}") from exc
    try:
        kwargs = decode_kwargs(row["kwargs"])
    except Exception as exc:  # noqa: BLE001 - whatever the decoders raise on a stored blob
        raise TriggerLoadError(f"cannot decode the kwargs of trigger {classpath!r} for "
                               f"{where(row)}: {type(exc).__name__}: {exc}") from exc
    try:
        trigger = cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 - a user's constructor
        raise TriggerLoadError(f"cannot construct trigger {classpath!r} for {where(row)}: "
                               f"{type(exc).__name__}: {exc}") from exc
    trigger.trigger_id = row.get("id")
    trigger.timeout_after = row.get("trigger_timeout")
    if row.get("ti_uuid") is not None:
        trigger.task_instance = task_instance(row)
    return trigger


def task_instance(row: dict):
    """What Airflow's triggerer gives ``trigger.task_instance`` for a deferral: the SDK's
    ``TaskInstance`` model (ids only; Sluice has no DAG versions)."""
    from airflow.sdk.api.datamodels._generated import TaskInstance

    return TaskInstance.model_construct(
        id=row["ti_uuid"], task_id=row["task_id"], dag_id=row["dag_id"], run_id=row["run_id"],
        try_number=row["try_number"], map_index=row["map_index"])


# --- running one trigger to its outcome ----------------------------------------------------
@dataclass(frozen=True)
class Fired:
    event: Any  # a TriggerEvent (or a BaseTaskEndEvent, which ends the instance)


@dataclass(frozen=True)
class Failed:
    reason: str  # TRIGGER_FAILURE or TRIGGER_TIMEOUT
    error: BaseException | None = None  # None: the trigger ended without an event, or timed out


class _NoTimeout:
    """The stand-in for ``move_on_after`` of a trigger without a timeout (shared, stateless)."""

    cancelled_caught = False

    def __enter__(self) -> _NoTimeout:
        return self

    def __exit__(self, *exc) -> None:
        return None


_NO_TIMEOUT = _NoTimeout()


async def first_event(trigger, timeout_at: datetime | None = None) -> Fired | Failed:
    """Run ``trigger`` until its first event, an error, its end or ``timeout_at``.

    ``cleanup()`` always runs afterwards, shielded, its errors only logged (as Airflow's
    ``run_trigger``). A greenback portal (:mod:`triggerer.portal`) lets the trigger call the
    SDK's sync methods from ``async def run()``, as Airflow allows unless
    ``AIRFLOW_DISABLE_GREENBACK_PORTAL`` (skipped for classes known never to:
    :data:`NO_PORTAL_CLASSES`).
    """
    if needs_portal(trigger):
        return await portal.run_with_portal(_first_event(trigger, timeout_at))
    return await _first_event(trigger, timeout_at)


async def _first_event(trigger, timeout_at: datetime | None) -> Fired | Failed:
    # no timeout, no scope: at 100,000 sleeping triggers each scope is memory held for nothing
    timer = _NO_TIMEOUT if timeout_at is None else anyio.move_on_after(
        (timeout_at - datetime.now(UTC)).total_seconds())
    try:
        with timer:
            async with aclosing(trigger.run()) as events:
                async for event in events:
                    return Fired(event)
        if timer.cancelled_caught:
            return Failed(TRIGGER_TIMEOUT)
        log.error("trigger_exited_without_event")
        return Failed(TRIGGER_FAILURE)
    except Exception as exc:  # noqa: BLE001 - the task fails, the triggerer lives on
        return Failed(TRIGGER_FAILURE, exc)
    finally:
        await clean_up(trigger)


#: trigger classes whose ``run()`` never calls the SDK's sync methods: no greenback portal
#: (:mod:`triggerer.portal` costs a sleeping trigger ~0.5 KB, 50 MB at 100,000); exact classes
#: only, a subclass may do anything in its own ``run()``
NO_PORTAL_CLASSES = frozenset({
    "airflow.providers.standard.triggers.temporal.DateTimeTrigger",  # TimeDeltaTrigger's rows too
    "airflow.providers.standard.triggers.temporal.TimeDeltaTrigger",
})


def needs_portal(trigger) -> bool:
    """Whether ``trigger`` gets a greenback portal: all but :data:`NO_PORTAL_CLASSES`."""
    cls = type(trigger)
    return f"{cls.__module__}.{cls.__qualname__}" not in NO_PORTAL_CLASSES


async def clean_up(trigger) -> None:
    """``trigger.cleanup()``, shielded, its errors only logged (Airflow's ``run_trigger``)."""
    with anyio.CancelScope(shield=True):
        try:
            await trigger.cleanup()
        except Exception as exc:  # noqa: BLE001
            log.warning("trigger_cleanup_failed", error=f"{type(exc).__name__}: {exc}")


# --- what the instance gets ----------------------------------------------------------------
def next_kwargs_with_event(stored: Any, payload: Any) -> str:
    """The resumed instance's ``next_kwargs`` JSON: the stored ones plus ``event``, in serde.

    As ``handle_event_submit``: decoded, ``event`` added, all encoded together so nested
    values keep their types. Raises :class:`Unresumable` with Airflow's reason when the
    stored kwargs cannot be decoded or the payload cannot be encoded.
    """
    from airflow.sdk.serde import serialize

    try:
        kwargs = _decode(from_jsonable(stored or {}))
        if not isinstance(kwargs, dict):
            raise ValueError(f"next_kwargs decoded to {type(kwargs).__name__}, expected a dict")
    except Exception as exc:  # noqa: BLE001 - an arbitrary stored blob
        raise Unresumable("Could not resume the task: its stored next_kwargs could not be "
                          f"decoded ({type(exc).__name__}: {exc})") from exc
    kwargs["event"] = payload
    try:
        return json.dumps(serialize(kwargs), allow_nan=False)
    except Exception as exc:  # noqa: BLE001 - a user's payload
        raise Unresumable("Could not resume the task: the event payload could not be "
                          f"serialized ({type(exc).__name__}: {exc})") from exc


def failure_next_kwargs(reason: str, error: BaseException | None) -> dict[str, Any]:
    """``next_kwargs`` of an instance resumed with ``__fail__``, as ``Trigger.submit_failure``:
    the reason and the error's traceback lines (``None`` without an error), capped."""
    lines = format_exception(error) if error is not None else None
    if lines is not None and sum(map(len, lines)) > MAX_ERROR_CHARS:
        lines = [cap_error("".join(lines))]
    return {"error": reason, "traceback": lines}


@dataclass(frozen=True)
class TaskEnd:
    state: str  # success, failed, skipped, or up_for_retry for a failure with tries left
    xcoms: dict[str, str]  # key -> the JSON text stored as the XCom's value


def task_end(event, *, retries_left: bool) -> TaskEnd:
    """A ``TaskSuccessEvent``/``TaskFailedEvent``/``TaskSkippedEvent``: the instance's end.

    As Airflow 3.3: a failure with retries left is ``up_for_retry`` and pushes no XComs;
    otherwise the XComs are stored as Airflow's triggerer stores them (``XComEncoder``).
    """
    from airflow.utils.json import XComEncoder

    state = str(getattr(event.task_instance_state, "value", event.task_instance_state))
    if state == "failed" and retries_left:
        return TaskEnd("up_for_retry", {})
    return TaskEnd(state, {k: json.dumps(v, cls=XComEncoder, allow_nan=False)
                           for k, v in (event.xcoms or {}).items()})


def is_task_end(event) -> bool:
    from airflow.triggers.base import BaseTaskEndEvent

    return isinstance(event, BaseTaskEndEvent)


# --- SUPERVISOR_COMMS for triggers ---------------------------------------------------------
class TriggerComms:
    """The SDK's ``SUPERVISOR_COMMS`` in the triggerer, answered from PostgreSQL.

    As Airflow's ``TriggerCommsDecoder``: ``asend`` from the triggerer's loop (or bridged
    from another loop), ``send`` from a thread (``sync_to_async``) blocks that thread only,
    ``send`` on the loop itself goes through the trigger's greenback portal. Answers are
    the SDK's result models, errors raised as ``AirflowRuntimeError`` like a failed API call.
    """

    def __init__(self, pool, secrets=None) -> None:
        self.pool = pool
        self.secrets = secrets  # shared.secrets.Secrets, for connections/variables
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def install(self) -> TriggerComms:
        """Bind to the running loop and become ``task_runner.SUPERVISOR_COMMS``."""
        from airflow.sdk.execution_time import task_runner

        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        task_runner.SUPERVISOR_COMMS = self
        return self

    def send(self, msg):
        if self._loop is None:
            raise RuntimeError("install() must be called before send()")
        if threading.get_ident() == self._loop_thread:
            import greenback

            if not greenback.has_portal():
                raise RuntimeError(
                    f"{type(msg).__name__}: a sync SDK call from a trigger's async def run() needs "
                    "the greenback portal (AIRFLOW_DISABLE_GREENBACK_PORTAL is set); use the async "
                    "method instead (e.g. aget_connection())")
            return greenback.await_(self.asend(msg))
        return asyncio.run_coroutine_threadsafe(self.asend(msg), self._loop).result()

    async def asend(self, msg):
        if self._loop is None:
            raise RuntimeError("install() must be called before asend()")
        if asyncio.get_running_loop() is not self._loop:
            future = asyncio.run_coroutine_threadsafe(self.asend(msg), self._loop)
            return await asyncio.wrap_future(future)
        handler = getattr(self, f"_on_{type(msg).__name__}", None)
        if handler is None:
            raise _api_error(501, f"Sluice's triggerer does not answer {type(msg).__name__} "
                                  "from a trigger yet")
        return await handler(msg)

    def _filters(self, msg):
        """The Execution API's own ``count``/``states`` filters, so a trigger's question is
        answered as a task's is (``worker.execution_api.task_instances.Filters``)."""
        from worker.execution_api.task_instances import Filters

        return Filters(dag_id=msg.dag_id, map_index=msg.map_index, task_ids=msg.task_ids,
                       task_group_id=msg.task_group_id, logical_dates=msg.logical_dates,
                       run_ids=msg.run_ids)

    async def _answer(self, call):
        """``call``'s result, its HTTP error raised as a failed API call is to the SDK."""
        from fastapi import HTTPException

        try:
            return await call
        except HTTPException as exc:
            message = exc.detail.get("message") if isinstance(exc.detail, dict) else exc.detail
            raise _api_error(exc.status_code, str(message), exc.detail) from None

    async def _on_GetTICount(self, msg):
        from airflow.sdk.execution_time.comms import TICount

        from shared.db import q

        args = await self._answer(self._filters(msg).args(self, msg.states))
        return TICount(count=await self.pool.fetchval(q("api_ti_count"), *args))

    async def _on_GetTaskStates(self, msg):
        from airflow.sdk.execution_time.comms import TaskStatesResult

        return TaskStatesResult(task_states=await self._answer(self._filters(msg).states(self)))

    async def _on_GetDRCount(self, msg):
        from airflow.sdk.execution_time.comms import DRCount

        from shared.db import q
        from worker.execution_api.task_instances import filter_values

        states = [getattr(s, "value", s) for s in msg.states] if msg.states else None
        return DRCount(count=await self.pool.fetchval(
            q("api_run_count"), msg.dag_id, filter_values(msg.logical_dates),
            filter_values(msg.run_ids), states))

    async def _on_GetDagRunState(self, msg):
        from airflow.sdk.execution_time.comms import DagRunStateResult

        from shared.db import q

        row = await self.pool.fetchrow(q("api_run_detail"), msg.dag_id, msg.run_id)
        if row is None:
            raise _api_error(404, f"Dag run with dag_id '{msg.dag_id}' and run_id "
                                  f"'{msg.run_id}' was not found")
        return DagRunStateResult(state=row["run_state"])

    async def _on_GetConnection(self, msg):
        from airflow.sdk.api.datamodels._generated import ConnectionResponse
        from airflow.sdk.exceptions import ErrorType
        from airflow.sdk.execution_time.comms import ConnectionResult, ErrorResponse
        from airflow.sdk.log import mask_secret

        from shared.db import q

        row = await self.pool.fetchrow(q("api_connection_get"), msg.conn_id)
        if row is None:
            return ErrorResponse(error=ErrorType.CONNECTION_NOT_FOUND, detail={"conn_id": msg.conn_id})
        conn = ConnectionResponse(**{**dict(row), "password": self._decrypt(row["password"]),
                                     "extra": self._decrypt(row["extra"])})
        for secret in (conn.password, conn.extra):
            if secret:
                mask_secret(secret)
        return ConnectionResult.from_conn_response(conn)

    async def _on_GetVariable(self, msg):
        from airflow.sdk.exceptions import ErrorType
        from airflow.sdk.execution_time.comms import ErrorResponse, VariableResult
        from airflow.sdk.log import mask_secret

        from shared.db import q

        row = await self.pool.fetchrow(q("api_variable_get"), msg.key)
        if row is None:
            return ErrorResponse(error=ErrorType.VARIABLE_NOT_FOUND, detail={"key": msg.key})
        value = self._decrypt(row["val"]) if row["is_encrypted"] else row["val"]
        if value:
            mask_secret(value, msg.key)
        return VariableResult(key=msg.key, value=value)

    async def _on_MaskSecret(self, msg):
        from airflow.sdk.log import mask_secret

        mask_secret(msg.value, msg.name)

    def _decrypt(self, token: str | None) -> str | None:
        if token is None:
            return None
        if self.secrets is None:
            raise _api_error(500, "the triggerer has no Fernet key to read secret values with")
        return self.secrets.decrypt(token)


def _api_error(status: int, message: str, detail: Any = None):
    """A failed server answer as the SDK's supervisor reports one to the task."""
    from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse

    return AirflowRuntimeError(ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail={
        "status_code": status, "message": message, "detail": detail}))
