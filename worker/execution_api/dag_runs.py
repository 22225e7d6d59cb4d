"""``/dag-runs`` and ``/dags``: what a task may read about runs and DAGs.

Triggering and clearing a run from a task (``TriggerDagRunOperator``) answer 400 (not implemented) until
Sluice's run creation is reachable from here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from airflow.sdk.api.datamodels._generated import DagResponse, DagRunStateResponse
from fastapi import APIRouter, Query, Request, Response

from shared.db import q
from worker.execution_api.common import (
    api,
    dag_run,
    json_text,
    model_response,
    not_found,
    not_implemented,
)

runs = APIRouter()
dags = APIRouter()


def _missing(dag_id: str, run_id: str):
    return not_found(f"Dag run with dag_id '{dag_id}' and run_id '{run_id}' was not found")


@runs.get("/count")
async def run_count(request: Request, dag_id: str,
                    logical_dates: Annotated[list[datetime] | None, Query()] = None,
                    run_ids: Annotated[list[str] | None, Query()] = None,
                    states: Annotated[list[str] | None, Query()] = None) -> int:
    return await api(request).pool.fetchval(q("api_run_count"), dag_id, logical_dates, run_ids,
                                            states)


@runs.get("/previous")
async def run_previous(request: Request, dag_id: str, logical_date: datetime,
                       state: str | None = None) -> Response:
    row = await api(request).pool.fetchrow(q("api_run_previous"), dag_id, logical_date, state)
    return json_text("null") if row is None else model_response(dag_run(row))


@runs.get("/{dag_id}/{run_id}")
async def run_detail(request: Request, dag_id: str, run_id: str) -> Response:
    row = await api(request).pool.fetchrow(q("api_run_detail"), dag_id, run_id)
    if row is None:
        raise _missing(dag_id, run_id)
    return model_response(dag_run(row))


@runs.get("/{dag_id}/{run_id}/state")
async def run_state(request: Request, dag_id: str, run_id: str) -> Response:
    row = await api(request).pool.fetchrow(q("api_run_detail"), dag_id, run_id)
    if row is None:
        raise _missing(dag_id, run_id)
    return model_response(DagRunStateResponse(state=row["run_state"]))


@runs.post("/{dag_id}/{run_id}")
async def run_trigger(dag_id: str, run_id: str) -> None:
    raise not_implemented("POST", "/dag-runs/{dag_id}/{run_id}", "triggering a DAG run from a task")


@runs.post("/{dag_id}/{run_id}/clear")
async def run_clear(dag_id: str, run_id: str) -> None:
    raise not_implemented("POST", "/dag-runs/{dag_id}/{run_id}/clear", "clearing a DAG run from a task")


@dags.get("/{dag_id}")
async def dag_detail(request: Request, dag_id: str) -> Response:
    row = await api(request).pool.fetchrow(q("api_dag"), dag_id)
    if row is None:
        raise not_found(f"Dag with dag_id: '{dag_id}' not found")
    return model_response(DagResponse(
        dag_id=dag_id, is_paused=row["is_paused"], bundle_name=None, bundle_version=None,
        relative_fileloc=row["fileloc"], owners=None, tags=row["tags"] or [],
        next_dagrun=row["next_interval_start"]))
