"""``/dag-runs`` and ``/dags``: what a task may read about runs and DAGs, and the runs it
may start.

``TriggerDagRunOperator`` (its ``DagRunTriggerException``, handled by the Task SDK's
runner) posts here: a trigger creates a queued manual run exactly as ``sluice dags
trigger`` does (``scheduler.runs.create_manual_run``) and wakes the scheduler; with
``reset_dag_run`` the SDK clears the existing run on a 409, which is ``sluice runs
clear`` (``shared.clear.clear_run``). Errors carry Airflow's status, reason and message
so the SDK raises what Airflow's users see.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from airflow.sdk.api.datamodels._generated import (
    DagResponse,
    DagRunState,
    DagRunStateResponse,
    TriggerDAGRunPayload,
)
from fastapi import APIRouter, Query, Request, Response
from pydantic import AwareDatetime

from shared.db import q
from shared.messages import RunChanged
from worker.execution_api.assets import consumed_events
from worker.execution_api.common import (
    api,
    dag_run,
    json_text,
    model_response,
    not_found,
    not_implemented,
    problem,
)
from worker.execution_api.task_instances import filter_values

runs = APIRouter()
dags = APIRouter()


def _missing(dag_id: str, run_id: str):
    return not_found(f"Dag run with dag_id '{dag_id}' and run_id '{run_id}' was not found")


@runs.get("/count")
async def run_count(request: Request, dag_id: str,
                    logical_dates: Annotated[list[AwareDatetime] | None, Query()] = None,
                    run_ids: Annotated[list[str] | None, Query()] = None,
                    states: Annotated[list[str] | None, Query()] = None) -> int:
    """Runs of ``dag_id`` matching every filter given (an empty list filters nothing)."""
    return await api(request).pool.fetchval(
        q("api_run_count"), dag_id, filter_values(logical_dates), filter_values(run_ids),
        filter_values(states))


@runs.get("/previous")
async def run_previous(request: Request, dag_id: str, logical_date: AwareDatetime,
                       state: DagRunState | None = None) -> Response:
    """The latest run before ``logical_date``, in ``state`` if given (``null``: none)."""
    row = await api(request).pool.fetchrow(q("api_run_previous"), dag_id, logical_date,
                                           state and state.value)
    return json_text("null") if row is None else model_response(dag_run(row))


@runs.get("/{dag_id}/{run_id}")
async def run_detail(request: Request, dag_id: str, run_id: str) -> Response:
    row = await api(request).pool.fetchrow(q("api_run_detail"), dag_id, run_id)
    if row is None:
        raise _missing(dag_id, run_id)
    run = dag_run(row)
    if row["run_type"] == "asset_triggered":  # assets: the events it consumed
        run.consumed_asset_events = await consumed_events(api(request).pool, dag_id, run_id)
    return model_response(run)


@runs.get("/{dag_id}/{run_id}/state")
async def run_state(request: Request, dag_id: str, run_id: str) -> Response:
    row = await api(request).pool.fetchrow(q("api_run_detail"), dag_id, run_id)
    if row is None:
        raise _missing(dag_id, run_id)
    return model_response(DagRunStateResponse(state=row["run_state"]))


@runs.post("/{dag_id}/{run_id}", status_code=204)
async def run_trigger(request: Request, dag_id: str, run_id: str,
                      payload: TriggerDAGRunPayload) -> Response:
    """Create run ``run_id`` of ``dag_id`` for a task (``TriggerDagRunOperator``).

    404 unknown DAG, 400 import errors or a conf its params refuse, 409 a run of that
    id (or, Sluice, of that logical date) exists -- the SDK then clears it when
    ``reset_dag_run`` is set.
    """
    from scheduler.runs import RunIdError, create_manual_run
    from shared.params import ParamsError

    if payload.partition_key is not None:
        raise not_implemented("POST", "/dag-runs/{dag_id}/{run_id}", "partitioned runs: "
                              "'partition_key'")
    a = api(request)
    async with a.pool.acquire() as conn:
        await _triggerable(conn, dag_id)
        if await conn.fetchval(q("find_runs"), run_id, dag_id) is not None:
            raise _exists(dag_id, run_id)
        # Airflow infers the data interval from when the run is asked for (run_after: the
        # payload's, else now), whatever the logical date. Sluice keeps a logical date on
        # every run: Airflow's date-less run (logical_date None) is dated run_after.
        run_after = payload.run_after or datetime.now(UTC)
        try:
            async with conn.transaction():
                run_pk, _ = await create_manual_run(
                    conn, dag_id, payload.conf or {}, payload.logical_date or run_after,
                    run_id=run_id, run_after=run_after)
                if payload.note is not None:
                    await conn.execute(q("api_run_set_note"), run_pk, payload.note)
        except (ParamsError, RunIdError) as exc:  # Airflow's ValueErrors: 400
            raise problem(400, "value_error", str(exc)) from None
        except ValueError:  # the run id taken meanwhile, or (Sluice) the logical date
            if await conn.fetchval(q("find_runs"), run_id, dag_id) is not None:
                raise _exists(dag_id, run_id) from None
            when = (payload.logical_date or run_after).isoformat()
            raise problem(409, "already_exists", f"A run already exists for Dag '{dag_id}' "
                          f"at logical date '{when}'") from None
    await a.notify(RunChanged(run_pk=run_pk))
    return Response(status_code=204)


@runs.post("/{dag_id}/{run_id}/clear", status_code=204)
async def run_clear(request: Request, dag_id: str, run_id: str) -> Response:
    """Run a run again (``reset_dag_run``): every instance cleared, run queued; as
    Airflow's ``dag.clear``, a run still running too (its running tries are stopped)."""
    from shared.clear import ClearError, clear_run

    a = api(request)
    async with a.pool.acquire() as conn:
        await _triggerable(conn, dag_id)
        run_pk = await conn.fetchval(q("find_runs"), run_id, dag_id)
        if run_pk is None:
            raise not_found(f"Dag run with run_id: '{run_id}' not found")
        try:
            await clear_run(conn, run_pk, unfinished_too=True)
        except ClearError as exc:
            raise problem(409, "invalid_state", f"cannot reset run '{run_id}' of Dag "
                          f"'{dag_id}': {exc}") from None
    await a.notify(RunChanged(run_pk=run_pk))
    return Response(status_code=204)


async def _triggerable(conn, dag_id: str) -> None:
    """404 for a DAG not parsed now, 400 for one whose file has import errors (Airflow's)."""
    row = await conn.fetchrow(q("api_dag_trigger_facts"), dag_id)
    if row is None or not row["is_active"]:
        raise not_found(f"Dag with dag_id: '{dag_id}' not found")
    if row["has_import_errors"]:
        raise problem(400, "import_errors", f"Dag with dag_id '{dag_id}' has import errors "
                      "and cannot be triggered")


def _exists(dag_id: str, run_id: str):
    return problem(409, "already_exists",
                   f"A run already exists for Dag '{dag_id}' with run_id '{run_id}'")


@dags.get("/{dag_id}")
async def dag_detail(request: Request, dag_id: str) -> Response:
    row = await api(request).pool.fetchrow(q("api_dag"), dag_id)
    if row is None:
        raise not_found(f"Dag with dag_id: '{dag_id}' not found")
    return model_response(DagResponse(
        dag_id=dag_id, is_paused=row["is_paused"], bundle_name=None, bundle_version=None,
        relative_fileloc=row["fileloc"], owners=None, tags=row["tags"] or [],
        next_dagrun=row["next_interval_start"]))
