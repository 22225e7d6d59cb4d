"""``/xcoms``: values as the SDK's serde wrote them, stored and served as that JSON text.

Reads are open to any task of the deployment (as Airflow); writes and deletes only to
the running try of the instance the XCom belongs to, guarded in the same statement.
A pushed value with ``mapped_length`` also records the task-map row the scheduler
expands downstream mapped tasks from, and, for an unmapped task's list, its elements:
``elements`` (Sluice's own route, not the SDK's) answers one of them with the list's
length, so a mapped try reads its own argument instead of the whole list (see
``worker.sdk_inprocess.Elements``).
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from shared.db import q
from worker.execution_api.common import Api, api, caller, json_text, not_found, problem

router = APIRouter()
elements = APIRouter()
Key = Annotated[str, Path(min_length=1)]
PREFIX = "/{dag_id}/{run_id}/{task_id}/{key:path}"
ELEMENTS = "/sluice/xcom-elements"  # where ``elements`` is mounted


def _where(dag_id: str, run_id: str, task_id: str, key: str, **more) -> str:
    extra = "".join(f" {k}={v}" for k, v in more.items())
    return f"XCom with key={key!r}{extra} not found for task {task_id!r} in DAG run {run_id!r} " \
           f"of {dag_id!r}"


@router.get(PREFIX + "/item/{offset}")
async def xcom_item(request: Request, dag_id: str, run_id: str, task_id: str, key: Key,
                    offset: int) -> Response:
    return await item(api(request), dag_id, run_id, task_id, key, offset)


async def item(a: Api, dag_id: str, run_id: str, task_id: str, key: str, offset: int) -> Response:
    """Value ``offset`` in map_index order (negative: from the end): one index scan."""
    if offset >= 0:
        value = await a.pool.fetchval(q("api_xcom_item"), dag_id, run_id, task_id, key, offset)
    else:
        value = await a.pool.fetchval(q("api_xcom_item_from_end"), dag_id, run_id, task_id, key,
                                      -1 - offset)
    if value is None:
        raise not_found(_where(dag_id, run_id, task_id, key, offset=offset))
    return json_text(value)


@elements.get("/{dag_id}/{run_id}/{task_id}")
async def xcom_length(request: Request, dag_id: str, run_id: str, task_id: str,
                      key: Annotated[str, Query(min_length=1)], map_index: int = -1) -> Response:
    return await element(api(request), dag_id, run_id, task_id, key, map_index, None)


@elements.get("/{dag_id}/{run_id}/{task_id}/{index}")
async def xcom_element(request: Request, dag_id: str, run_id: str, task_id: str,
                       index: Annotated[int, Path(ge=0)], key: Annotated[str, Query(min_length=1)],
                       map_index: int = -1) -> Response:
    return await element(api(request), dag_id, run_id, task_id, key, map_index, index)


async def element(a: Api, dag_id: str, run_id: str, task_id: str, key: str, map_index: int,
                  index: int | None) -> Response:
    """``{"length": n, "version": v, "value": element}`` of a pushed list (no ``value``
    past its end or without ``index``); 404 when the value has no stored elements: the
    caller reads it whole instead. ``version`` changes when the list is pushed again."""
    row = await a.pool.fetchrow(q("api_xcom_element"), dag_id, run_id, task_id, key, map_index,
                                index)
    if row is None or row["length"] is None or row["version"] is None:
        raise not_found(_where(dag_id, run_id, task_id, key, map_index=map_index) +
                        " as a list of elements")
    head = f'{{"length":{row["length"]},"version":{json.dumps(row["version"])}'
    return json_text(head + ("}" if row["value"] is None else f',"value":{row["value"]}}}'))


@router.get(PREFIX + "/slice")
async def xcom_slice(request: Request, dag_id: str, run_id: str, task_id: str, key: Key,
                     start: int | None = None, stop: int | None = None, step: int | None = None,
                     include_prior_dates: bool = False) -> Response:
    return await values_slice(api(request), dag_id, run_id, task_id, key, start, stop, step,
                              include_prior_dates)


async def values_slice(a: Api, dag_id: str, run_id: str, task_id: str, key: str,
                       start: int | None, stop: int | None, step: int | None,
                       include_prior_dates: bool) -> Response:
    """``values[start:stop:step]`` as Python slices; bounds that count from the start are
    read as OFFSET/LIMIT (a reduce reading its input in chunks reads each row once)."""
    if (start or 0) >= 0 and (stop or 0) >= 0 and (step or 1) > 0:
        offset = start or 0
        limit = None if stop is None else max(stop - offset, 0)
        rest = slice(None, None, step)
    else:
        offset, limit, rest = 0, None, slice(start, stop, step)
    rows = await a.pool.fetch(q("api_xcom_values_prior" if include_prior_dates else
                                "api_xcom_values"), dag_id, run_id, task_id, key, offset, limit)
    values = [r["value"] for r in rows][rest]
    return json_text("[" + ",".join(values) + "]")


@router.head(PREFIX)
async def xcom_head(request: Request, dag_id: str, run_id: str, task_id: str, key: Key,
                    map_index: int | None = None) -> Response:
    return await head(api(request), dag_id, run_id, task_id, key, map_index)


async def head(a: Api, dag_id: str, run_id: str, task_id: str, key: str,
               map_index: int | None) -> Response:
    if map_index is not None:
        raise problem(400, "invalid_request", "Cannot specify map_index in a HEAD request")
    count = await a.pool.fetchval(q("api_xcom_count"), dag_id, run_id, task_id, key)
    return Response(headers={"Content-Range": f"map_indexes {count}"})


@router.get(PREFIX)
async def xcom_get(request: Request, dag_id: str, run_id: str, task_id: str, key: Key,
                   map_index: int = -1, include_prior_dates: bool = False) -> Response:
    return await get(api(request), dag_id, run_id, task_id, key, map_index, include_prior_dates)


async def get(a: Api, dag_id: str, run_id: str, task_id: str, key: str, map_index: int,
              include_prior_dates: bool) -> Response:
    value = await a.pool.fetchval(q("api_xcom_get"), dag_id, run_id, task_id, key, map_index,
                                  include_prior_dates)
    if value is None:
        raise not_found(_where(dag_id, run_id, task_id, key, map_index=map_index))
    return json_text('{"key":' + json.dumps(key) + ',"value":' + value + "}")


def _checked_value(a: Api, body: bytes) -> str:
    """The pushed JSON text, as sent: valid JSON (no NaN) within max_xcom_bytes."""
    if len(body) > a.settings.max_xcom_bytes:
        raise problem(400, "too_large", f"XCom value of {len(body)} bytes exceeds "
                      f"SLUICE_MAX_XCOM_BYTES={a.settings.max_xcom_bytes} (the worker's setting)")
    text = body.decode() if body else "null"
    try:
        json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise problem(400, "invalid_format", f"XCom value is not a valid JSON: {exc}") from None
    return text


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


@router.post(PREFIX, status_code=201)
async def xcom_set(request: Request, dag_id: str, run_id: str, task_id: str, key: Key,
                   map_index: int = -1, mapped_length: int | None = None,
                   dag_result: bool = False) -> dict:
    return await set_value(api(request), caller(request), dag_id, run_id, task_id, key,
                           await request.body(), map_index, mapped_length)


async def set_value(a: Api, ti: uuid.UUID, dag_id: str, run_id: str, task_id: str, key: str,
                    body: bytes, map_index: int, mapped_length: int | None) -> dict:
    """Write the pushed value, only as the running try of that very instance."""
    value = _checked_value(a, body)
    if mapped_length is not None and mapped_length > a.settings.max_map_length:
        raise problem(400, "unmappable_return_value_length",
                      f"pushed value is too large to map as a downstream's dependency: "
                      f"{mapped_length} > {a.settings.max_map_length}")
    found = await a.pool.fetchval(q("api_xcom_set"), ti, a.settings.worker_id,
                                  dag_id, run_id, task_id, map_index, key, value, mapped_length)
    if not found:
        await _explain_write_miss(a, ti, dag_id, run_id, task_id, map_index)
    return {"message": "XCom successfully set"}


@router.delete(PREFIX)
async def xcom_delete(request: Request, dag_id: str, run_id: str, task_id: str, key: Key,
                      map_index: int = -1) -> dict:
    a = api(request)
    found = await a.pool.fetchval(q("api_xcom_delete"), caller(request), a.settings.worker_id,
                                  dag_id, run_id, task_id, map_index, key)
    if not found:
        await _explain_write_miss(a, caller(request), dag_id, run_id, task_id, map_index)
    return {"message": f"XCom with key: {key} successfully deleted."}


async def _explain_write_miss(a: Api, ti: uuid.UUID, dag_id: str, run_id: str,
                              task_id: str, map_index: int) -> None:
    row = await a.pool.fetchrow(q("api_ti_state_of"), ti)
    if row is None:
        raise not_found("Task Instance not found")
    if (row["dag_id"], row["run_id"], row["task_id"], row["map_index"]) != \
            (dag_id, run_id, task_id, map_index):
        raise problem(403, "access_denied", "A task instance may write and delete only its own "
                      f"XComs, not those of {dag_id}/{run_id}/{task_id}[{map_index}]")
    raise problem(409, "invalid_state", "XComs are written only by this worker's running try",
                  previous_state=row["state"])
