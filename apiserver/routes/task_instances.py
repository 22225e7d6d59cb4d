"""``.../taskInstances``: list, get, mapped listing, tries, logs, clear and mark.

Sluice keeps the current try of an instance (``task_instance``), the tries it
ended before (``task_instance_history``) and the log of every try; ``/tries``
lists them all, and ``/logs/{try_number}`` reads any try's log wherever its
worker wrote it (``shared.tasklogs``).
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from starlette.convertors import IntegerConvertor, register_url_convertor

from apiserver import models as m
from apiserver.common import (
    db,
    every,
    not_found,
    order_key,
    patterns,
    seconds_between,
    state_of,
    unsupported,
    wake_scheduler,
)
from apiserver.routes.runs import require_dag, run_row
from apiserver.sql import q

router = APIRouter(tags=["Task Instance"])


class _MapIndex(IntegerConvertor):
    """``{map_index:map_index}``: a signed integer path segment, so that Airflow's other
    ``.../{task_id}/<name>`` paths fall through to the "not in Sluice" answer."""

    regex = "-?[0-9]+"


register_url_convertor("map_index", _MapIndex())
TI_ORDER = {"map_index", "task_id", "start_date", "end_date", "state", "id"}
ALL = 2**31 - 1  # "no limit" for the statement's LIMIT


async def _operators(conn, dag_ids: set[str]) -> dict[tuple[str, str], str]:
    rows = await conn.fetch(q("dag_tasks"), sorted(dag_ids))
    return {(r["dag_id"], t["task_id"]): t.get("operator") for r in rows for t in r["tasks"] or []}


def ti_history(row, operator: str | None) -> dict:
    """A ``task_instance`` row (``sql: tis``) as Airflow's ``TaskInstanceHistoryResponse``."""
    return {
        "task_id": row["task_id"], "dag_id": row["dag_id"], "dag_run_id": row["run_id"],
        "map_index": row["map_index"], "start_date": row["start_date"],
        "end_date": row["end_date"],
        "duration": seconds_between(row["start_date"], row["end_date"]),
        "state": row["state"], "try_number": row["try_number"], "max_tries": row["max_tries"],
        "task_display_name": row["task_id"], "dag_display_name": row["dag_id"],
        "hostname": row["hostname"], "unixname": row["unixname"], "pool": row["pool"],
        "pool_slots": row["pool_slots"], "queue": row["queue"],
        "priority_weight": row["priority_weight"], "operator": operator,
        "operator_name": operator, "queued_when": row["queued_at"], "scheduled_when": None,
        "pid": row["pid"], "executor": None, "executor_config": "{}", "dag_version": None,
    }


def ti_response(row, operator: str | None) -> dict:
    """As Airflow's ``TaskInstanceResponse``: the id is the current try's UUID."""
    manual = row["run_type"] == "manual"
    trigger = None
    if row["trigger_id"] is not None and row["trigger_classpath"] is not None:
        trigger = {"id": row["trigger_id"], "classpath": row["trigger_classpath"],
                   "kwargs": "", "created_date": row["trigger_created_at"], "queue": None,
                   "triggerer_id": row["triggerer_id"]}
    return {
        **ti_history(row, operator), "id": str(row["uuid"]),
        "logical_date": row["logical_date"],
        "run_after": row["logical_date"] if manual else row["data_interval_end"] or row["logical_date"],
        "note": None, "rendered_map_index": row["label"],
        "rendered_fields": row["rendered_fields"] or {}, "trigger": trigger,
        "triggerer_job": None,
    }


async def fetch_tis(request: Request, *args, responses=ti_response) -> tuple[list[dict], int]:
    """Run ``sql: tis`` with ``args`` and shape its rows (with the total)."""
    async with db(request).acquire() as conn:
        rows = await conn.fetch(q("tis"), *args)
        ops = await _operators(conn, {r["dag_id"] for r in rows}) if rows else {}
    return ([responses(r, ops.get((r["dag_id"], r["task_id"]))) for r in rows],
            rows[0]["total"] if rows else 0)


def _ti_filters(state, map_index, pool, queue, try_number) -> tuple:
    states = [s or "none" for s in state] if state else None
    return states, map_index or None, pool or None, queue or None, try_number or None


@router.get("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances",
            response_model=m.TaskInstanceCollectionResponse)
async def get_task_instances(
    request: Request, dag_id: str, dag_run_id: str,
    task_id: str | None = None,
    task_display_name_pattern: str | None = None,
    state: Annotated[list[str] | None, Query()] = None,
    pool: Annotated[list[str] | None, Query()] = None,
    queue: Annotated[list[str] | None, Query()] = None,
    try_number: Annotated[list[int] | None, Query()] = None,
    map_index: Annotated[list[int] | None, Query()] = None,
    limit: Annotated[int, Query(ge=0)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    order_by: Annotated[list[str] | None, Query()] = None,
) -> dict:
    """Instances of a run (``~`` for every run, and DAG), as Airflow's ``get_task_instances``."""
    dag, run = every(dag_id), every(dag_run_id)
    if run is not None and dag is not None:
        await run_row(request, dag, run)
    else:
        await require_dag(request, dag)
    order = order_key(order_by, TI_ORDER, "TaskInstance")
    items, total = await fetch_tis(
        request, dag, run, task_id, False, *_ti_filters(state, map_index, pool, queue, try_number),
        patterns(task_display_name_pattern), order, limit, offset)
    return {"task_instances": items, "total_entries": total}


@router.get("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/listMapped",
            response_model=m.TaskInstanceCollectionResponse)
async def get_mapped_task_instances(
    request: Request, dag_id: str, dag_run_id: str, task_id: str,
    state: Annotated[list[str] | None, Query()] = None,
    pool: Annotated[list[str] | None, Query()] = None,
    queue: Annotated[list[str] | None, Query()] = None,
    try_number: Annotated[list[int] | None, Query()] = None,
    map_index: Annotated[list[int] | None, Query()] = None,
    limit: Annotated[int, Query(ge=0)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    order_by: Annotated[list[str] | None, Query()] = None,
) -> dict:
    """The mapped instances of one task of a run, by map index."""
    await run_row(request, dag_id, dag_run_id)
    found = await db(request).fetchrow(q("mapped_task_exists"), dag_id, dag_run_id, task_id)
    if found["n"] == 0:
        raise not_found(f"Task id {task_id}")
    order = order_key(order_by, TI_ORDER, "TaskInstance")
    items, total = await fetch_tis(
        request, dag_id, dag_run_id, task_id, True,
        *_ti_filters(state, map_index, pool, queue, try_number), None, order, limit, offset)
    return {"task_instances": items, "total_entries": total}


async def one_ti(request: Request, dag_id: str, run_id: str, task_id: str, map_index: int,
                 responses=ti_response) -> dict:
    items, _ = await fetch_tis(request, dag_id, run_id, task_id, False, None, [map_index],
                               None, None, None, None, "", 1, 0, responses=responses)
    if not items:
        raise not_found(f"The Task Instance with dag_id: `{dag_id}`, run_id: `{run_id}`, "
                        f"task_id: `{task_id}` and map_index: `{map_index}` was")
    return items[0]


_TI = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}"


@router.get(_TI, response_model=m.TaskInstanceResponse)
async def get_task_instance(request: Request, dag_id: str, dag_run_id: str, task_id: str) -> dict:
    return await one_ti(request, dag_id, dag_run_id, task_id, -1)


async def all_tries(request: Request, dag_id: str, run_id: str, task_id: str,
                    map_index: int) -> list[dict]:
    """Every try of an instance, oldest first: its ended ones (``sql: ti_tries``), then the
    current one unless a clear already recorded that try (it has not started again yet)."""
    current = await one_ti(request, dag_id, run_id, task_id, map_index, ti_history)
    rows = await db(request).fetch(q("ti_tries"), dag_id, run_id, task_id, map_index)
    operator = current["operator"]
    ended = [ti_history(r, operator) for r in rows]
    if any(t["try_number"] == current["try_number"] for t in ended):
        return ended
    return [*ended, current]


@router.get(_TI + "/tries", response_model=m.TaskInstanceHistoryCollectionResponse)
async def get_task_instance_tries(request: Request, dag_id: str, dag_run_id: str, task_id: str,
                                  map_index: int = -1) -> dict:
    """The instance's tries: the ones it ended (kept across clears) and the current one."""
    tries = await all_tries(request, dag_id, dag_run_id, task_id, map_index)
    return {"task_instances": tries, "total_entries": len(tries)}


@router.get(_TI + "/tries/{task_try_number}", response_model=m.TaskInstanceHistoryResponse)
async def get_task_instance_try_details(request: Request, dag_id: str, dag_run_id: str,
                                        task_id: str, task_try_number: int,
                                        map_index: int = -1) -> dict:
    tries = await all_tries(request, dag_id, dag_run_id, task_id, map_index)
    found = [t for t in tries if t["try_number"] == task_try_number]
    if not found:
        raise not_found(f"Try {task_try_number} of task {task_id!r} (map index {map_index}) "
                        f"of run {dag_run_id!r} of DAG {dag_id!r}")
    return found[0]


@router.get(_TI + "/logs/{try_number}", response_model=m.TaskInstancesLogResponse,
            responses={200: {"content": {"application/x-ndjson": {}}}})
async def get_log(request: Request, dag_id: str, dag_run_id: str, task_id: str,
                  try_number: int, map_index: int = -1, full_content: bool = False,
                  token: str | None = None,
                  accept: Annotated[str, Header()] = "*/*"):
    """A try's log (``shared.tasklogs``: the local file or the worker that ran it), from
    the continuation ``token`` on; JSON, or NDJSON when asked."""
    records, continuation = await _log_records(request, dag_id, dag_run_id, task_id, map_index,
                                               try_number, token, full_content)
    if "application/x-ndjson" in accept:
        lines = (json.dumps(r, default=str) + "\n" for r in records)
        return StreamingResponse(lines, media_type="application/x-ndjson")
    return {"content": records, "continuation_token": continuation}


async def _log_records(request: Request, dag_id: str, run_id: str, task_id: str,
                       map_index: int, try_number: int, token: str | None,
                       full: bool) -> tuple[list[dict], str]:
    from shared.tasklogs import LogNotFound, read_log

    records: list[dict] = []
    while True:
        try:
            chunk = await read_log(db(request), state_of(request).settings, dag_id, run_id,
                                   task_id, map_index, try_number, continuation=token)
        except LogNotFound as exc:
            raise not_found(str(exc)) from None
        # a line without a time (written before lines had one) leaves the key out, as
        # Airflow's StructuredLogMessage has a timestamp or none
        records += [{k: v for k, v in r.items() if v is not None or k != "timestamp"}
                    for r in chunk.records]
        token = chunk.continuation
        if not (full and chunk.more):
            return records, token


@router.get(_TI + "/{map_index:map_index}", response_model=m.TaskInstanceResponse)
async def get_mapped_task_instance(request: Request, dag_id: str, dag_run_id: str,
                                   task_id: str, map_index: int) -> dict:
    return await one_ti(request, dag_id, dag_run_id, task_id, map_index)


@router.get(_TI + "/{map_index:map_index}/tries", response_model=m.TaskInstanceHistoryCollectionResponse)
async def get_mapped_task_instance_tries(request: Request, dag_id: str, dag_run_id: str,
                                         task_id: str, map_index: int) -> dict:
    return await get_task_instance_tries(request, dag_id, dag_run_id, task_id, map_index)


@router.get(_TI + "/{map_index:map_index}/tries/{task_try_number}",
            response_model=m.TaskInstanceHistoryResponse)
async def get_mapped_task_instance_try_details(request: Request, dag_id: str, dag_run_id: str,
                                               task_id: str, map_index: int,
                                               task_try_number: int) -> dict:
    return await get_task_instance_try_details(request, dag_id, dag_run_id, task_id,
                                               task_try_number, map_index)


# --- marking ------------------------------------------------------------------------------------
def _relatives(tasks: list[dict], task_id: str, up: bool, down: bool) -> set[str]:
    """``task_id`` and, as asked, every task upstream or downstream of it."""
    edges = {t["task_id"]: t for t in tasks}
    found = {task_id}
    for key, wanted in (("upstream", up), ("downstream", down)):
        todo = [task_id] if wanted else []
        while todo:
            for other in edges.get(todo.pop(), {}).get(key, []):
                if other not in found:
                    found.add(other)
                    todo.append(other)
    return found


async def _mark(request: Request, dag_id: str, run_id: str, task_id: str,
                map_index: int | None, body: m.PatchTaskInstanceBody,
                update_mask: list[str] | None) -> dict:
    fields = set(update_mask) if update_mask else {"new_state"} | (
        {"note"} if body.note is not None else set())
    if "note" in fields:
        raise unsupported("notes on task instances")
    if body.include_future or body.include_past:
        raise unsupported("include_future / include_past: Sluice marks within one run")
    if body.new_state is None:
        raise HTTPException(400, "'new_state' should not be empty")
    run = await run_row(request, dag_id, run_id)
    found = await db(request).fetchrow(q("dag_tasks"), [dag_id])
    tasks = (found["tasks"] if found else None) or []
    wanted = _relatives(tasks, task_id, body.include_upstream, body.include_downstream)
    rows = await db(request).fetch(q("tis_to_mark"), run["id"], sorted(wanted), map_index,
                                   task_id)
    if not any(r["task_id"] == task_id for r in rows):
        raise not_found(f"Task instance {task_id!r} (map index {map_index}) of run {run_id!r}")
    async with db(request).acquire() as conn, conn.transaction():
        changed = await conn.fetch(q("mark_tis"), run["id"], [r["id"] for r in rows],
                                   body.new_state)
    await wake_scheduler(request, run["id"])
    ids = {r["id"] for r in changed}
    items, _ = await fetch_tis(request, dag_id, run_id, None, False, None, None, None, None,
                               None, None, "", ALL, 0, responses=lambda r, op: (r["id"], ti_response(r, op)))
    chosen = [ti for pk, ti in items if pk in ids]
    return {"task_instances": chosen, "total_entries": len(chosen)}


@router.patch(_TI, response_model=m.TaskInstanceCollectionResponse)
async def patch_task_instance(request: Request, dag_id: str, dag_run_id: str, task_id: str,
                              body: m.PatchTaskInstanceBody, map_index: int | None = None,
                              update_mask: Annotated[list[str] | None, Query()] = None) -> dict:
    """Mark an instance (every map index when none is given) success, failed or skipped."""
    return await _mark(request, dag_id, dag_run_id, task_id, map_index, body, update_mask)


@router.patch(_TI + "/{map_index:map_index}", response_model=m.TaskInstanceCollectionResponse)
async def patch_task_instance_by_map_index(
        request: Request, dag_id: str, dag_run_id: str, task_id: str, map_index: int,
        body: m.PatchTaskInstanceBody,
        update_mask: Annotated[list[str] | None, Query()] = None) -> dict:
    return await _mark(request, dag_id, dag_run_id, task_id, map_index, body, update_mask)


# --- clearing -----------------------------------------------------------------------------------
async def clear_or_plan(request: Request, run, only_failed: bool, dry_run: bool) -> list[dict]:
    """The instances clearing ``run`` resets; cleared unless ``dry_run`` (``shared.clear``)."""
    from shared.clear import ClearError, Instance, clear_run, plan_clear
    from shared.db import q as shared_q
    from shared.serialization import DagSpec

    async with db(request).acquire() as conn:
        if dry_run:
            serialized = await conn.fetchval(shared_q("task_spec"), run["dag_id"])
            if serialized is None:
                raise HTTPException(409, f"DAG {run['dag_id']!r} is no longer parsed")
            rows = await conn.fetch(shared_q("run_instances_for_clear"), run["id"])
            plan = plan_clear(DagSpec.model_validate(serialized),
                              [Instance(r["id"], r["task_id"], r["map_index"], r["state"],
                                        r["try_number"]) for r in rows], only_failed)
            ids = set(plan.reset)
        else:
            try:
                await clear_run(conn, run["id"], only_failed=only_failed)
            except ClearError as exc:
                raise HTTPException(409, str(exc)) from None
            ids = None
    if not dry_run:
        await wake_scheduler(request, run["id"])
    items, _ = await fetch_tis(request, run["dag_id"], run["run_id"], None, False, None, None,
                               None, None, None, None, "", ALL, 0,
                               responses=lambda r, op: (r["id"], ti_response(r, op)))
    return [ti for pk, ti in items if ids is None or pk in ids]


@router.post("/dags/{dag_id}/clearTaskInstances",
             response_model=m.TaskInstanceCollectionResponse)
async def post_clear_task_instances(request: Request, dag_id: str,
                                    body: m.ClearTaskInstancesBody) -> dict:
    """Clear one run's instances: all of them, or its failed ones (``only_failed``)."""
    if body.dag_run_id is None:
        raise unsupported("clearing task instances across runs: give 'dag_run_id'")
    refused = [name for name in ("task_ids", "start_date", "end_date") if getattr(body, name)]
    refused += [name for name in ("only_running", "include_upstream", "include_downstream",
                                  "include_future", "include_past", "prevent_running_task")
                if getattr(body, name)]
    if refused or body.run_on_latest_version is False:
        raise unsupported(f"{', '.join(refused) or 'run_on_latest_version=false'} when "
                          "clearing task instances: Sluice clears a whole run, or its failed "
                          "instances")
    run = await run_row(request, dag_id, body.dag_run_id)
    tis = await clear_or_plan(request, run, body.only_failed, body.dry_run)
    return {"task_instances": tis, "total_entries": len(tis)}
