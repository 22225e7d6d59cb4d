"""``/api/v2/dags/{dag_id}/dagRuns``: list, get, trigger, clear and mark runs.

Triggering is ``sluice dags trigger``'s path (``scheduler.runs.create_manual_run``
then a wake-up) and clearing is ``sluice runs clear``'s (``shared.clear``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from apiserver import models as m
from apiserver.common import (
    db,
    every,
    not_found,
    order_key,
    patterns,
    seconds_between,
    unsupported,
    wake_scheduler,
)
from apiserver.sql import q

router = APIRouter(tags=["DagRun"])
RUN_ORDER = {"id", "run_id", "dag_run_id", "logical_date", "start_date", "end_date", "state"}
_Dates = Annotated[datetime | None, Query()]


def run_response(row) -> dict:
    """A ``dag_run`` row as Airflow's ``DAGRunResponse``."""
    manual = row["run_type"] == "manual"
    return {
        "dag_run_id": row["run_id"], "dag_id": row["dag_id"],
        "logical_date": row["logical_date"], "queued_at": row["created_at"],
        "start_date": row["start_date"], "end_date": row["end_date"],
        "duration": seconds_between(row["start_date"], row["end_date"]),
        "data_interval_start": row["data_interval_start"],
        "data_interval_end": row["data_interval_end"],
        "run_after": row["logical_date"] if manual else row["data_interval_end"] or row["logical_date"],
        "last_scheduling_decision": None, "run_type": row["run_type"], "state": row["state"],
        "triggered_by": None if manual else "timetable", "triggering_user_name": None,
        "conf": row["conf"], "note": row["note"], "dag_versions": [], "bundle_version": None,
        "dag_display_name": row["dag_id"], "partition_key": None, "partition_date": None,
    }


async def run_row(request: Request, dag_id: str, run_id: str):
    row = await db(request).fetchrow(q("run"), dag_id, run_id)
    if row is None:
        raise not_found(f"The DagRun with dag_id: `{dag_id}` and run_id: `{run_id}` was")
    return row


async def require_dag(request: Request, dag_id: str | None) -> None:
    if dag_id is not None and await db(request).fetchval(q("dag_exists"), dag_id, False) is None:
        raise not_found(f"The Dag with ID: `{dag_id}` was")


@router.get("/dags/{dag_id}/dagRuns", response_model=m.DAGRunCollectionResponse)
async def get_dag_runs(
    request: Request, dag_id: str,
    limit: Annotated[int, Query(ge=0)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    logical_date_gte: _Dates = None, logical_date_gt: _Dates = None,
    logical_date_lte: _Dates = None, logical_date_lt: _Dates = None,
    start_date_gte: _Dates = None, start_date_gt: _Dates = None,
    start_date_lte: _Dates = None, start_date_lt: _Dates = None,
    end_date_gte: _Dates = None, end_date_gt: _Dates = None,
    end_date_lte: _Dates = None, end_date_lt: _Dates = None,
    run_type: Annotated[list[str] | None, Query()] = None,
    state: Annotated[list[str] | None, Query()] = None,
    order_by: Annotated[list[str] | None, Query()] = None,
    run_id_pattern: str | None = None,
    dag_id_pattern: str | None = None,
) -> dict:
    """Runs of a DAG, or of every DAG with ``~``, as Airflow's ``get_dag_runs``."""
    dag = every(dag_id)
    await require_dag(request, dag)
    order = order_key(order_by, RUN_ORDER, "DagRun").replace("dag_run_id", "run_id")
    rows = await db(request).fetch(
        q("runs"), dag, state or None, run_type or None, patterns(run_id_pattern),
        patterns(dag_id_pattern), logical_date_gte, logical_date_gt, logical_date_lte,
        logical_date_lt, start_date_gte, start_date_gt, start_date_lte, start_date_lt,
        end_date_gte, end_date_gt, end_date_lte, end_date_lt, order, limit, offset)
    total = rows[0]["total"] if rows else 0 if offset == 0 else None
    return {"dag_runs": [run_response(r) for r in rows], "total_entries": total}


@router.get("/dags/{dag_id}/dagRuns/{dag_run_id}", response_model=m.DAGRunResponse)
async def get_dag_run(request: Request, dag_id: str, dag_run_id: str) -> dict:
    return run_response(await run_row(request, dag_id, dag_run_id))


@router.post("/dags/{dag_id}/dagRuns", response_model=m.DAGRunResponse)
async def trigger_dag_run(request: Request, dag_id: str, body: m.TriggerDAGRunPostBody) -> dict:
    """A manual run with ``conf``, as ``sluice dags trigger`` creates it."""
    from scheduler.runs import create_manual_run
    from shared.params import ParamsError

    for name in ("dag_run_id", "data_interval_start", "data_interval_end", "run_after",
                 "partition_key"):
        if getattr(body, name) is not None:
            raise unsupported(f"'{name}' when triggering a run (Sluice names a manual run "
                              "manual__<logical date> and infers its data interval)")
    if await db(request).fetchval(q("dag_exists"), dag_id, True) is None:
        raise not_found(f"Dag with dag_id: '{dag_id}'")
    async with db(request).acquire() as conn:
        try:
            run_pk, _ = await create_manual_run(conn, dag_id, body.conf or {}, body.logical_date)
        except ParamsError as exc:  # Airflow: 400 with the param's validation error
            raise HTTPException(400, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        if body.note is not None:
            await conn.execute(q("run_note"), run_pk, body.note)
        row = await conn.fetchrow(q("run_at"), run_pk)
    await wake_scheduler(request, run_pk)
    return run_response(row)


@router.post("/dags/{dag_id}/dagRuns/{dag_run_id}/clear",
             response_model=m.ClearTaskInstanceCollectionResponse | m.DAGRunResponse)
async def clear_dag_run(request: Request, dag_id: str, dag_run_id: str,
                        body: m.DAGRunClearBody) -> dict:
    """Run a finished run again (``sluice runs clear``); ``dry_run`` lists what would clear."""
    from apiserver.routes.task_instances import clear_or_plan

    if body.only_new:
        raise unsupported("'only_new' when clearing a run")
    if body.run_on_latest_version is False:
        raise unsupported("clearing a run against an older DAG version: Sluice clears "
                          "against the DAG as it is now")
    row = await run_row(request, dag_id, dag_run_id)
    tis = await clear_or_plan(request, row, body.only_failed, body.dry_run)
    if body.dry_run:
        return {"task_instances": tis, "total_entries": len(tis)}
    if body.note is not None:
        await db(request).execute(q("run_note"), row["id"], body.note)
    return run_response(await db(request).fetchrow(q("run_at"), row["id"]))


@router.patch("/dags/{dag_id}/dagRuns/{dag_run_id}", response_model=m.DAGRunResponse)
async def patch_dag_run(request: Request, dag_id: str, dag_run_id: str,
                        body: m.DAGRunPatchBody,
                        update_mask: Annotated[list[str] | None, Query()] = None) -> dict:
    """Mark a run success, failed or queued, or set its note."""
    fields = set(update_mask) if update_mask else body.model_fields_set
    if fields - {"state", "note"}:
        raise HTTPException(400, f"Invalid update_mask fields: {sorted(fields - {'state', 'note'})}")
    row = await run_row(request, dag_id, dag_run_id)
    async with db(request).acquire() as conn, conn.transaction():
        if "state" in fields and body.state is not None:
            await conn.execute(q("mark_run"), row["id"], body.state)
        if "note" in fields:
            await conn.execute(q("run_note"), row["id"], body.note)
    await wake_scheduler(request, row["id"])
    return run_response(await db(request).fetchrow(q("run_at"), row["id"]))
