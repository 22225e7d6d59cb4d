"""The UI's own read endpoints under ``/ui/api`` and its live feed ``/ui/events``.

Each answers one page's question with one or two statements where Airflow's
REST API would need a call per run or per task. They only read: pausing,
triggering, clearing and marking go through the REST API's routes, with their
roles and checks. Every endpoint needs a logged-in user (any role).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from apiserver.ui import grid, logs
from apiserver.ui.events import EventHub, sse_stream
from apiserver.ui.graph import layout
from apiserver.ui.grid import iso
from apiserver.ui.sql import q
from shared import tasklogs
from shared.config import Settings
from shared.serialization import DagSpec

XCOM_PREVIEW_CHARS = 4000
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class UiContext:
    """What the UI needs of the api-server: its settings, pool, event hub and auth."""

    settings: Settings
    pool: Callable[[], asyncpg.Pool]
    hub: EventHub
    authenticate: Callable[[Request], Any]


def build_router(ctx: UiContext) -> APIRouter:
    router = APIRouter(dependencies=[Depends(ctx.authenticate)])

    @router.get("/ui/api/dags")
    async def dags() -> dict:
        async with ctx.pool().acquire() as conn:
            rows = await conn.fetch(q("ui_dags"))
            errors = await conn.fetch(q("ui_import_errors"))
        return {"dags": [_dag_row(r) for r in rows],
                "import_errors": [{"fileloc": e["fileloc"], "message": e["message"],
                                   "created_at": iso(e["created_at"])} for e in errors]}

    @router.get("/ui/api/dags/{dag_id}")
    async def dag(dag_id: str) -> dict:
        row, spec = await _dag(ctx, dag_id)
        return {**_dag_row(row), "description": spec.description, "params": spec.params,
                "param_schemas": spec.param_schemas, "tags": spec.tags,
                "max_active_runs": spec.max_active_runs, "tasks": len(spec.tasks)}

    @router.get("/ui/api/dags/{dag_id}/grid")
    async def grid_of(dag_id: str, limit: int = Query(25, ge=1, le=200),
                      run_id: str | None = None) -> dict:
        row, spec = await _dag(ctx, dag_id)
        async with ctx.pool().acquire() as conn:
            out = await grid.read_grid(conn, spec, limit=limit, run_id=run_id)
        return {**out, "is_paused": row["is_paused"]}

    @router.get("/ui/api/dags/{dag_id}/graph")
    async def graph(dag_id: str, run_id: str | None = None) -> dict:
        _, spec = await _dag(ctx, dag_id)
        out = {"dag_id": dag_id, **layout(spec), "run": None, "cells": {}}
        async with ctx.pool().acquire() as conn:
            found = await grid.read_grid(conn, spec, limit=1, run_id=run_id)
        if found["runs"]:
            out["run"] = found["runs"][-1]
            out["cells"] = found["cells"].get(str(out["run"]["run_pk"]), {})
        return out

    @router.get("/ui/api/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/instances")
    async def instances(dag_id: str, run_id: str, task_id: str, state: str | None = None,
                        offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000)):
        run = await _run(ctx, dag_id, run_id)
        async with ctx.pool().acquire() as conn:
            rows = await conn.fetch(q("ui_mapped_instances"), run["run_pk"], task_id, state,
                                    limit, offset)
        return {"instances": [{"map_index": r["map_index"], "state": r["state"],
                               "label": r["label"], "try_number": r["try_number"],
                               "max_tries": r["max_tries"], "start_date": iso(r["start_date"]),
                               "end_date": iso(r["end_date"])} for r in rows],
                "offset": offset, "limit": limit}

    @router.get("/ui/api/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/{map_index}")
    async def instance(dag_id: str, run_id: str, task_id: str, map_index: int) -> dict:
        run = await _run(ctx, dag_id, run_id)
        async with ctx.pool().acquire() as conn:
            ti = await conn.fetchrow(q("ui_instance"), dag_id, run_id, task_id, map_index)
            if ti is None:
                raise HTTPException(404, f"no task instance {task_id!r} map index {map_index} "
                                         f"in run {run_id!r} of DAG {dag_id!r}")
            xcoms = await conn.fetch(q("ui_instance_xcoms"), ti["run_pk"], task_id,
                                     XCOM_PREVIEW_CHARS, map_index)
            ended = await conn.fetch(q("ui_instance_tries"), ti["run_pk"], task_id, map_index)
        return {"run": grid.run_json(run), "instance": _instance_json(ti),
                "tries": [{"try_number": t["try_number"], "state": t["state"],
                           "start_date": iso(t["start_date"]), "end_date": iso(t["end_date"]),
                           "hostname": t["hostname"], "error": t["error"]} for t in ended],
                "xcoms": [{"key": x["key"], "value": x["value"], "size": x["size"],
                           "truncated": x["size"] > XCOM_PREVIEW_CHARS,
                           "created_at": iso(x["created_at"])} for x in xcoms]}

    @router.get("/ui/api/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/{map_index}/log")
    async def log(dag_id: str, run_id: str, task_id: str, map_index: int,
                  try_number: int = Query(..., ge=1), continuation: str | None = None) -> dict:
        try:
            chunk = await tasklogs.read_log(ctx.pool(), ctx.settings, dag_id, run_id, task_id,
                                            map_index, try_number, continuation=continuation)
        except tasklogs.LogNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return logs.chunk_json(chunk)

    @router.get("/ui/api/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/{map_index}/log/stream")
    async def log_stream(dag_id: str, run_id: str, task_id: str, map_index: int,
                         try_number: int = Query(..., ge=1), continuation: str | None = None):
        run = await _run(ctx, dag_id, run_id)
        where = {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index}
        return _sse(logs.follow(ctx.pool(), ctx.settings, ctx.hub, run["run_pk"], where,
                                try_number, continuation))

    @router.get("/ui/events")
    async def events(since: str | None = None):
        return _sse(sse_stream(ctx.hub, since))

    return router


class EventStream(StreamingResponse):
    """Server-sent events that end as soon as the page goes.

    Under ASGI 2.4 Starlette notices a gone client only at its next write, which
    for a quiet feed is the next heartbeat: until then the stream would hold its
    subscription, and a stopping server would wait for it.
    """

    async def __call__(self, scope, receive, send) -> None:
        async with anyio.create_task_group() as tg:
            async def stream() -> None:
                with contextlib.suppress(OSError):  # the client went while we wrote
                    await self.stream_response(send)
                tg.cancel_scope.cancel()

            tg.start_soon(stream)
            await self.listen_for_disconnect(receive)
            tg.cancel_scope.cancel()


def _sse(stream: AsyncIterator[str]) -> StreamingResponse:
    return EventStream(stream, media_type="text/event-stream", headers=SSE_HEADERS)


async def _dag(ctx: UiContext, dag_id: str) -> tuple[asyncpg.Record, DagSpec]:
    async with ctx.pool().acquire() as conn:
        row = await conn.fetchrow(q("ui_dag"), dag_id)
    if row is None:
        raise HTTPException(404, f"DAG {dag_id!r} not found")
    try:
        return row, DagSpec.model_validate(row["serialized"])
    except ValidationError as exc:
        raise HTTPException(500, f"DAG {dag_id!r}: stored definition unreadable: "
                                 f"{exc.errors()[0]['msg']}") from None


async def _run(ctx: UiContext, dag_id: str, run_id: str) -> asyncpg.Record:
    async with ctx.pool().acquire() as conn:
        run = await conn.fetchrow(q("ui_run"), dag_id, run_id)
    if run is None:
        raise HTTPException(404, f"run {run_id!r} of DAG {dag_id!r} not found")
    return run


def _dag_row(row: asyncpg.Record) -> dict:
    return {"dag_id": row["dag_id"], "fileloc": row["fileloc"], "is_paused": row["is_paused"],
            "next_run": iso(row["next_interval_start"]),
            "next_run_after": iso(row["next_interval_end"]),
            "tags": row.get("tags"), "schedule": row.get("schedule"),
            "recent": row.get("recent")}


def _instance_json(ti: asyncpg.Record) -> dict:
    out = {k: ti[k] for k in ("task_id", "map_index", "state", "try_number", "max_tries",
                              "label", "queue", "pool", "pool_slots", "priority_weight",
                              "next_method", "worker_id", "hostname", "pid", "error",
                              "has_next_kwargs", "trigger_id", "trigger_classpath",
                              "triggerer_hostname", "triggerer_pid")}
    for k in ("queued_at", "start_date", "end_date", "next_retry_at", "trigger_timeout",
              "trigger_created_at"):
        out[k] = iso(ti[k])
    fields = ti["rendered_fields"]
    out["rendered_fields"] = json.loads(fields) if isinstance(fields, str) else fields
    return out
