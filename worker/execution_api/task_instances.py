"""``/task-instances``: a try starts, heartbeats, renders, skips downstream and ends.

Every write is one guarded statement on "still this worker's running try"; when the
guard matches nothing, :func:`explain_miss` answers as Airflow does (404 unknown
instance, 409 with the state it is in, 200 for a repeated identical update).
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from airflow.sdk.api.datamodels._generated import (
    PreviousTIResponse,
    PrevSuccessfulDagRunResponse,
    TaskInstanceState,
    TaskStatesResponse,
    TIDeferredStatePayload,
    TIEnterRunningPayload,
    TIHeartbeatInfo,
    TIRescheduleStatePayload,
    TIRetryStatePayload,
    TIRunContext,
    TISkippedDownstreamTasksStatePayload,
    TISuccessStatePayload,
    TITerminalStatePayload,
)
from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, JsonValue, ValidationError

from shared.db import q
from shared.messages import RunChanged, TriggersPending
from worker.execution_api.assets import (
    consumed_events,
    emits_assets,
    finish_emitting,
    inactive_assets,
)
from worker.execution_api.common import (
    Api,
    api,
    caller,
    dag_run,
    json_text,
    model_response,
    not_found,
    not_implemented,
    problem,
)

router = APIRouter()
reschedules = APIRouter()

RESCHEDULE = "__reschedule__"  # next_method of a reschedule-mode wait: execute() runs again
TERMINAL = ("failed", "skipped", "removed", "upstream_failed")
PAYLOADS: dict[str, type[BaseModel]] = {
    "success": TISuccessStatePayload, "up_for_retry": TIRetryStatePayload,
    "deferred": TIDeferredStatePayload, "up_for_reschedule": TIRescheduleStatePayload,
    **dict.fromkeys(TERMINAL, TITerminalStatePayload),
}


async def own_ti(request: Request, task_instance_id: uuid.UUID) -> uuid.UUID:
    """The path's instance, which must be the token's own try (403 otherwise)."""
    if caller(request) != task_instance_id:
        raise problem(403, "access_denied", "Token subject does not match task instance ID")
    return task_instance_id


TiId = Annotated[uuid.UUID, Depends(own_ti)]


async def explain_miss(api: Api, ti: uuid.UUID, target: str | None, message: str) -> Response:
    """Why a guarded write matched nothing: 404, 409 with the state, or 200 if already done."""
    row = await api.pool.fetchrow(q("api_ti_state_of"), ti)
    if row is None:
        raise not_found("Task Instance not found")
    if row["state"] == target:
        return Response(status_code=200)
    if row["state"] == "running" and row["worker_id"] != api.settings.worker_id:
        message = "TI is running under another worker"
    raise problem(409, "invalid_state", message, previous_state=row["state"])


# --- start ---------------------------------------------------------------------------------
@router.patch("/{task_instance_id}/run")
async def ti_run(request: Request, ti: TiId, payload: TIEnterRunningPayload) -> Response:
    return await start(api(request), ti, payload)


async def start(a: Api, ti: uuid.UUID, payload: TIEnterRunningPayload) -> Response:
    """Start the try in this worker and answer what the SDK needs to run it."""
    row = await a.pool.fetchrow(q("api_ti_run"), ti, a.settings.worker_id, payload.pid,
                                payload.hostname, payload.unixname, payload.start_date)
    if row is None:
        await explain_miss(a, ti, None, "TI was not in a state where it could be marked as running")
    context = run_context(row)
    if row["run_type"] == "asset_triggered":  # assets: its triggering_asset_events
        context.dag_run.consumed_asset_events = await consumed_events(a.pool, row["dag_id"],
                                                                      row["run_id"])
    return model_response(context)


def run_context(row) -> TIRunContext:
    """A start's answer; a resumed deferral gets its method, kwargs and first start date."""
    resuming = row["next_method"] is not None and row["next_method"] != RESCHEDULE
    rescheduled = row["next_kwargs"] if row["next_method"] == RESCHEDULE else {}
    context = TIRunContext(
        dag_run=dag_run(row), max_tries=row["max_tries"], variables=[], connections=[],
        xcom_keys_to_clear=list(row["xcom_keys"] or []),
        should_retry=row["max_tries"] != 0 and row["try_number"] <= row["max_tries"],
        task_reschedule_count=int((rescheduled or {}).get("reschedule_count", 0)),
    )
    if resuming:
        context.next_method = row["next_method"]
        context.next_kwargs = row["next_kwargs"]
        context.start_date = row["start_date"]
    return context


# --- state ---------------------------------------------------------------------------------
def parse_state_payload(body: bytes) -> BaseModel:
    """The payload model its ``state`` names, validated (422 as FastAPI words it)."""
    try:
        data = json.loads(body)
        state = data.get("state") if isinstance(data, dict) else None
    except ValueError as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ["body"],
                                       "msg": f"JSON decode error: {exc}", "input": None}]) from None
    if state == "awaiting_input":
        raise not_implemented("PATCH", "/task-instances/{task_instance_id}/state",
                              "human-in-the-loop: awaiting_input")
    model = PAYLOADS.get(state)
    if model is None:
        raise RequestValidationError([{"type": "literal_error", "loc": ["body", "state"],
                                       "msg": f"unknown target state {state!r}", "input": state}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


@router.patch("/{task_instance_id}/state", status_code=204)
async def ti_update_state(request: Request, ti: TiId) -> Response:
    return await update_state(api(request), ti, parse_state_payload(await request.body()))


async def update_state(a: Api, ti: uuid.UUID, payload: BaseModel) -> Response:
    """End the try (success, failed, skipped, ... up_for_retry) or park it (deferred,
    up_for_reschedule), then wake the scheduler (and the triggerer for a trigger)."""
    match payload:
        case TIDeferredStatePayload():
            run_pk = await defer(a, ti, payload)
        case TIRescheduleStatePayload():
            run_pk = await reschedule(a, ti, payload)
        case _:
            run_pk = await finish(a, ti, payload)
    if run_pk is None:
        return await explain_miss(a, ti, target_state(payload),
                                  "TI was not in the running state so it cannot be updated")
    if a.ended is not None:
        a.ended(ti)
    messages = [RunChanged(run_pk=run_pk)]
    if isinstance(payload, TIDeferredStatePayload | TIRescheduleStatePayload):
        messages.insert(0, TriggersPending())
    await a.notify(*messages)
    return Response(status_code=204)


def target_state(payload) -> str:
    return getattr(payload.state, "value", payload.state)


async def finish(a: Api, ti: uuid.UUID, payload) -> int | None:
    state = target_state(payload)
    delay = error = None
    if isinstance(payload, TIRetryStatePayload):
        delay = payload.retry_delay_seconds
        if delay is None:
            delay = await retry_delay(a, ti)
        error = payload.retry_reason[:500] if payload.retry_reason else None
    label = payload.rendered_map_index if "rendered_map_index" in payload.model_fields_set else None
    args = (ti, a.settings.worker_id, state, payload.end_date, label, float(delay or 0.0), error)
    if emits_assets(payload):  # assets: a success's events commit with it
        return await finish_emitting(a, ti, payload, args)
    return await a.pool.fetchval(q("api_ti_finish"), *args)


async def retry_delay(a: Api, ti: uuid.UUID) -> float:
    """The task's own retry delay for this try: Sluice's one RetryPolicy rule."""
    from shared.serialization import TaskSpec

    row = await a.pool.fetchrow(q("api_ti_retry_facts"), ti)
    if row is None or row["task_spec"] is None:
        return 0.0
    policy = TaskSpec.model_validate(row["task_spec"]).retry_policy()
    return policy.delay_after(row["dag_id"], row["task_id"], row["logical_date"],
                              row["try_number"]) or 0.0


async def defer(a: Api, ti: uuid.UUID, payload: TIDeferredStatePayload) -> int | None:
    """The trigger row and the parked instance, in one statement (as the worker's defer)."""
    kwargs = payload.trigger_kwargs if payload.trigger_kwargs is not None else {}
    timeout = payload.trigger_timeout.total_seconds() if payload.trigger_timeout else None
    label = payload.rendered_map_index if "rendered_map_index" in payload.model_fields_set else None
    return await a.pool.fetchval(
        q("api_ti_defer"), ti, a.settings.worker_id, payload.classpath, json.dumps(kwargs),
        payload.next_method, json.dumps(payload.next_kwargs or {}), timeout, label)


async def reschedule(a: Api, ti: uuid.UUID, payload: TIRescheduleStatePayload) -> int | None:
    """Sluice has no up_for_reschedule state: the wait is a deferral on a DateTimeTrigger
    whose event runs ``execute()`` again in the same try (next_method ``__reschedule__``)."""
    from airflow.providers.standard.triggers.temporal import DateTimeTrigger
    from airflow.sdk.serde import serialize

    classpath, kwargs = DateTimeTrigger(moment=payload.reschedule_date).serialize()
    return await a.pool.fetchval(
        q("api_ti_defer"), ti, a.settings.worker_id, classpath, json.dumps(serialize(kwargs)),
        RESCHEDULE, None, None, None)


# --- while running -------------------------------------------------------------------------
@router.put("/{task_instance_id}/heartbeat", status_code=204)
async def ti_heartbeat(request: Request, ti: TiId, payload: TIHeartbeatInfo) -> Response:
    return await heartbeat(api(request), ti, payload)


async def heartbeat(a: Api, ti: uuid.UUID, payload: TIHeartbeatInfo) -> Response:
    """Alive, and still ours: 409 tells the task to stop when the try was taken away."""
    if await a.pool.fetchval(q("api_ti_heartbeat"), ti, a.settings.worker_id,
                             payload.hostname, payload.pid) is not None:
        return Response(status_code=204)
    row = await a.pool.fetchrow(q("api_ti_state_of"), ti)
    if row is None:
        raise not_found("Task Instance not found")
    if row["state"] == "running":
        raise problem(409, "running_elsewhere", "TI is already running elsewhere",
                      current_hostname=row["hostname"], current_pid=row["pid"])
    raise problem(409, "not_running", "TI is no longer in the running state and task should "
                  "terminate", current_state=row["state"])


@router.put("/{task_instance_id}/rtif", status_code=201)
async def ti_put_rtif(request: Request, ti: TiId,
                      fields: Annotated[dict[str, JsonValue], Body()]) -> dict:
    return await put_rtif(api(request), ti, fields)


async def put_rtif(a: Api, ti: uuid.UUID, fields: dict) -> dict:
    if await a.pool.fetchval(q("api_ti_rtif"), ti, json.dumps(fields)) is None:
        raise not_found("Task Instance not found")
    return {"message": "Rendered task instance fields successfully set"}


@router.patch("/{task_instance_id}/rendered-map-index", status_code=204)
async def ti_rendered_map_index(request: Request, ti: TiId,
                                label: Annotated[str, Body()]) -> Response:
    if not label:
        raise problem(422, "invalid_value", "rendered_map_index cannot be empty")
    if await api(request).pool.fetchval(q("api_ti_rendered_map_index"), ti, label) is None:
        raise not_found("Task Instance not found")
    return Response(status_code=204)


@router.patch("/{task_instance_id}/skip-downstream", status_code=204)
async def ti_skip_downstream(request: Request, ti: TiId,
                             payload: TISkippedDownstreamTasksStatePayload) -> Response:
    pairs = [(t, -1) if isinstance(t, str) else tuple(t) for t in payload.tasks]
    row = await api(request).pool.fetchrow(
        q("api_ti_skip_downstream"), ti, [t for t, _ in pairs], [m for _, m in pairs])
    if row is None:
        raise not_found("Task Instance not found")
    return Response(status_code=204)


@router.get("/{task_instance_id}/previous-successful-dagrun")
async def ti_previous_successful_dagrun(request: Request, ti: TiId) -> Response:
    row = await api(request).pool.fetchrow(q("api_ti_prev_success_run"), ti)
    return model_response(PrevSuccessfulDagRunResponse(**dict(row or {})))


@router.get("/{task_instance_id}/validate-inlets-and-outlets")
async def ti_validate_inlets_and_outlets(request: Request, ti: TiId) -> dict:
    """The assets the task's inlets and outlets declare that Sluice has no record of."""
    return {"inactive_assets": [p.model_dump() for p in await inactive_assets(api(request), ti)]}


# --- queries over instances ----------------------------------------------------------------
# What ExternalTaskSensor, its WorkflowTrigger and TriggerDagRunOperator ask about other
# DAGs' instances, answered as Airflow 3.3's routes do (execution_api/routes/
# task_instances.py): an empty list filters nothing, dates must carry a time zone, a
# task group is looked up in the DAG as parsed now (404 when it has no such group).
def filter_values(values: list | None) -> list | None:
    """A filter list, or None when absent or empty (Airflow's ``if task_ids:``)."""
    return list(values) if values else None


class Filters:
    """The filters ``count`` and ``states`` share, as query parameters."""

    def __init__(self, dag_id: str, map_index: int | None = None,
                 task_ids: Annotated[list[str] | None, Query()] = None,
                 task_group_id: str | None = None,
                 logical_dates: Annotated[list[AwareDatetime] | None, Query()] = None,
                 run_ids: Annotated[list[str] | None, Query()] = None) -> None:
        self.dag_id, self.map_index, self.task_ids = dag_id, map_index, filter_values(task_ids)
        self.task_group_id = task_group_id or None
        self.logical_dates, self.run_ids = filter_values(logical_dates), filter_values(run_ids)

    async def group(self, a: Api) -> list[str]:
        """The task ids inside the task group (nested groups included); 404 for an unknown
        DAG or group, with Airflow's words for each."""
        rows = await a.pool.fetch(q("api_group_task_ids"), self.dag_id, self.task_group_id)
        if not rows:
            if await a.pool.fetchrow(q("api_dag"), self.dag_id) is None:
                raise not_found(f"The Dag with ID: `{self.dag_id}` was not found")
            raise not_found(f"Task group {self.task_group_id} not found in DAG {self.dag_id}")
        return [r["task_id"] for r in rows]

    async def tasks(self, a: Api) -> list[str] | None:
        """``count``'s task ids: those given, narrowed to the task group's when one is."""
        if self.task_group_id is None:
            return self.task_ids
        group = await self.group(a)
        return [t for t in group if t in self.task_ids] if self.task_ids else group

    async def args(self, a: Api, states: list[str] | None = None,
                   tasks: list[str] | None | bool = True) -> tuple:
        """``api_ti_count`` / ``api_ti_select``'s arguments; ``"null"`` matches no state."""
        states = filter_values(states)
        real = [s for s in states if s != "null"] if states else None
        if tasks is True:
            tasks = await self.tasks(a)
        return (self.dag_id, tasks, self.map_index, self.logical_dates,
                self.run_ids, real, bool(states and "null" in states))

    async def states(self, a: Api) -> dict[str, dict[str, str | None]]:
        """``{run_id: {task_id or task_id_<map_index>: state}}`` as Airflow's ``/states``.

        With a task group *and* task ids Airflow answers both sets (the union), where
        ``count`` answers their intersection: each route is followed as written.
        """
        wanted: list[str] | None = self.task_ids
        if self.task_group_id is not None:
            group = await self.group(a)
            wanted = sorted({*group, *self.task_ids}) if self.task_ids else group
        found: dict[str, dict[str, str | None]] = {}
        for r in await a.pool.fetch(q("api_ti_select"), *await self.args(a, tasks=wanted)):
            key = r["task_id"] if r["map_index"] < 0 else f"{r['task_id']}_{r['map_index']}"
            found.setdefault(r["run_id"], {})[key] = r["state"]
        return found


@router.get("/count")
async def ti_count(request: Request, filters: Annotated[Filters, Depends()],
                   states: Annotated[list[str] | None, Query()] = None) -> int:
    a = api(request)
    return await a.pool.fetchval(q("api_ti_count"), *await filters.args(a, states))


@router.get("/states")
async def ti_states(request: Request, filters: Annotated[Filters, Depends()]) -> Response:
    return model_response(TaskStatesResponse(task_states=await filters.states(api(request))))


@router.get("/previous/{dag_id}/{task_id}")
async def ti_previous(request: Request, dag_id: str, task_id: str, map_index: int = -1,
                      logical_date: AwareDatetime | None = None,
                      state: TaskInstanceState | None = None) -> Response:
    """The latest instance before ``logical_date`` (any when absent), in ``state`` if given."""
    row = await api(request).pool.fetchrow(q("api_ti_previous"), dag_id, task_id, map_index,
                                           logical_date, state and state.value)
    if row is None:
        return json_text("null")
    duration = (row["end_date"] - row["start_date"]).total_seconds() \
        if row["end_date"] and row["start_date"] else None
    return model_response(PreviousTIResponse(**dict(row), duration=duration))


@reschedules.get("/{task_instance_id}/start_date")
async def reschedule_start_date(request: Request, ti: TiId, try_number: int = 1) -> Response:
    """When the first poke of this try's reschedule-mode wait began (null: never rescheduled)."""
    start = await api(request).pool.fetchval(q("api_ti_reschedule_start"), ti)
    return json_text(json.dumps(start))
