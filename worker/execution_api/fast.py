"""The calls every try makes, answered without FastAPI's per-request layers.

A no-op try makes five calls (start, XCom get, rendered fields, XCom set, end) and a
reduce one per upstream value; through FastAPI each spent most of its CPU in
dependency solving, parameter validation and a thread hop. ``FastRoutes`` sits in
front of the FastAPI app, behind the gate: a request for a hot route whose path,
query and body are exactly what the SDK's client sends is served here by the same
functions the FastAPI routes call, with the body validated by the SDK's generated
models. Anything else -- another route, an unparsable value, an unexpected content
type, a body that fails validation -- goes to the FastAPI app unchanged (its body
replayed), so error answers stay FastAPI's own. The HTTP contract is one.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from airflow.sdk.api.datamodels._generated import TIEnterRunningPayload, TIHeartbeatInfo
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import JSONResponse, Response

from shared.db import DB_ERRORS
from worker.execution_api import task_instances, xcoms
from worker.execution_api.common import Api, database_unavailable, problem

TI = re.compile(r"^/task-instances/(?P<ti>[^/]+)/(?P<what>run|state|rtif|heartbeat)$")
# as Starlette compiles the xcoms routes' paths ({key:path} is ".*"), in their order
XCOM = r"^/xcoms/(?P<dag_id>[^/]+)/(?P<run_id>[^/]+)/(?P<task_id>[^/]+)/(?P<key>.*)"
XCOM_ITEM = re.compile(XCOM + r"/item/(?P<offset>[^/]+)$")
XCOM_SLICE = re.compile(XCOM + r"/slice$")
XCOM_ONE = re.compile(XCOM + "$")
ELEMENT = re.compile("^" + xcoms.ELEMENTS +
                     r"/(?P<dag_id>[^/]+)/(?P<run_id>[^/]+)/(?P<task_id>[^/]+)(?:/(?P<index>[0-9]{1,9}))?$")
INT = re.compile(r"^-?[0-9]{1,18}$")
BOOLS = {"true": True, "false": False}
JSON_TYPES = (None, b"application/json")
TI_METHODS = {"run": "PATCH", "state": "PATCH", "rtif": "PUT", "heartbeat": "PUT"}


class Fallback(Exception):
    """Not the plain case: the FastAPI app answers (and words any error) instead."""


Handler = Callable[[Api, dict, bytes], Awaitable[Response]]


class FastRoutes:
    """ASGI middleware: hot routes here, everything else to ``app``."""

    def __init__(self, app, *, api: Api) -> None:
        self.app, self.api = app, api

    async def __call__(self, scope, receive, send) -> None:
        handler = route(scope) if scope["type"] == "http" else None
        if handler is None:
            return await self.app(scope, receive, send)
        body, complete = await read_body(receive)
        if not complete:
            return await self.app(scope, replay(body, receive), send)
        try:
            response = await handler(self.api, scope, body)
        except Fallback:
            return await self.app(scope, replay(body, receive), send)
        except HTTPException as exc:  # as FastAPI's http_exception_handler answers it
            response = JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)
        except DB_ERRORS as exc:  # as the app's handler for them
            response = database_unavailable(scope["path"], exc)
        await response(scope, receive, send)


def route(scope) -> Handler | None:
    """The lean handler of this method and path, or None (FastAPI's routing decides)."""
    method, path = scope["method"], scope["path"]
    if path.startswith("/task-instances/"):
        m = TI.match(path)
        if m is not None and TI_METHODS[m["what"]] == method:
            return TI_HANDLERS[m["what"]]
        return None
    if not path.startswith("/xcoms/"):
        return xcom_element if method == "GET" and ELEMENT.match(path) else None
    if method == "GET":
        if XCOM_ITEM.match(path):
            return xcom_item
        if XCOM_SLICE.match(path):
            return xcom_slice
        return xcom_get if XCOM_ONE.match(path) else None
    if method in ("HEAD", "POST") and XCOM_ONE.match(path):
        return xcom_head if method == "HEAD" else xcom_set
    return None


# --- reading requests ----------------------------------------------------------------------
async def read_body(receive) -> tuple[bytes, bool]:
    """The request's body, and False when the client went away before it was all sent."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def replay(body: bytes, receive):
    """A ``receive`` that hands the body read so far over once, then the real channel."""
    sent = False

    async def again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return again


def caller(scope) -> uuid.UUID:
    return scope["state"]["ti_uuid"]


def own_ti(scope, text: str) -> uuid.UUID:
    """The path's instance, which must be the token's own try (as task_instances.own_ti)."""
    try:
        ti = uuid.UUID(text)
    except ValueError:
        raise Fallback from None
    if caller(scope) != ti:
        raise problem(403, "access_denied", "Token subject does not match task instance ID")
    return ti


def query(scope) -> dict[str, str]:
    """Query parameters, the last of a repeated name winning (as Starlette's ``get``)."""
    raw = scope.get("query_string", b"")
    return dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True)) if raw else {}


def int_param(params: dict[str, str], name: str, default: int | None) -> int | None:
    value = params.get(name)
    if value is None:
        return default
    if not INT.match(value):
        raise Fallback
    return int(value)


def bool_param(params: dict[str, str], name: str) -> bool:
    value = params.get(name)
    if value is None:
        return False
    if value not in BOOLS:
        raise Fallback
    return BOOLS[value]


def json_body(scope, body: bytes) -> Any:
    """The body as FastAPI reads a JSON body param: only plain JSON, else fall back."""
    if not body:
        raise Fallback
    content_type = next((v for k, v in scope["headers"] if k == b"content-type"), None)
    if content_type not in JSON_TYPES:
        raise Fallback
    try:
        return json.loads(body, parse_constant=_no_constant)
    except ValueError:
        raise Fallback from None


def _no_constant(name: str):
    raise ValueError(name)


def model(cls, data: Any):
    try:
        return cls.model_validate(data)
    except ValidationError:
        raise Fallback from None


def xcom_path(pattern: re.Pattern, scope) -> re.Match:
    m = pattern.match(scope["path"])
    if not m["key"]:
        raise Fallback  # FastAPI's 422 (min_length)
    return m


# --- task instances --------------------------------------------------------------------------
async def ti_run(a: Api, scope, body: bytes) -> Response:
    ti = own_ti(scope, TI.match(scope["path"])["ti"])
    return await task_instances.start(a, ti, model(TIEnterRunningPayload, json_body(scope, body)))


async def ti_state(a: Api, scope, body: bytes) -> Response:
    ti = own_ti(scope, TI.match(scope["path"])["ti"])
    try:
        payload = task_instances.parse_state_payload(body)
    except RequestValidationError:
        raise Fallback from None
    return await task_instances.update_state(a, ti, payload)


async def ti_rtif(a: Api, scope, body: bytes) -> Response:
    ti = own_ti(scope, TI.match(scope["path"])["ti"])
    fields = json_body(scope, body)
    if not isinstance(fields, dict):
        raise Fallback
    return JSONResponse(await task_instances.put_rtif(a, ti, fields), 201)


async def ti_heartbeat(a: Api, scope, body: bytes) -> Response:
    ti = own_ti(scope, TI.match(scope["path"])["ti"])
    return await task_instances.heartbeat(a, ti, model(TIHeartbeatInfo, json_body(scope, body)))


TI_HANDLERS: dict[str, Handler] = {"run": ti_run, "state": ti_state, "rtif": ti_rtif,
                                   "heartbeat": ti_heartbeat}


# --- xcoms -----------------------------------------------------------------------------------
async def xcom_item(a: Api, scope, body: bytes) -> Response:
    m = xcom_path(XCOM_ITEM, scope)
    if not INT.match(m["offset"]):
        raise Fallback
    return await xcoms.item(a, m["dag_id"], m["run_id"], m["task_id"], m["key"], int(m["offset"]))


async def xcom_element(a: Api, scope, body: bytes) -> Response:
    m, p = ELEMENT.match(scope["path"]), query(scope)
    if not p.get("key"):
        raise Fallback
    index = None if m["index"] is None else int(m["index"])
    return await xcoms.element(a, m["dag_id"], m["run_id"], m["task_id"], p["key"],
                               int_param(p, "map_index", -1), index)


async def xcom_slice(a: Api, scope, body: bytes) -> Response:
    m, p = xcom_path(XCOM_SLICE, scope), query(scope)
    return await xcoms.values_slice(
        a, m["dag_id"], m["run_id"], m["task_id"], m["key"], int_param(p, "start", None),
        int_param(p, "stop", None), int_param(p, "step", None), bool_param(p, "include_prior_dates"))


async def xcom_head(a: Api, scope, body: bytes) -> Response:
    m, p = xcom_path(XCOM_ONE, scope), query(scope)
    return await xcoms.head(a, m["dag_id"], m["run_id"], m["task_id"], m["key"],
                            int_param(p, "map_index", None))


async def xcom_get(a: Api, scope, body: bytes) -> Response:
    m, p = xcom_path(XCOM_ONE, scope), query(scope)
    return await xcoms.get(a, m["dag_id"], m["run_id"], m["task_id"], m["key"],
                           int_param(p, "map_index", -1), bool_param(p, "include_prior_dates"))


async def xcom_set(a: Api, scope, body: bytes) -> Response:
    m, p = xcom_path(XCOM_ONE, scope), query(scope)
    bool_param(p, "dag_result")  # validated as FastAPI does, unused
    answer = await xcoms.set_value(a, caller(scope), m["dag_id"], m["run_id"], m["task_id"],
                                   m["key"], body, int_param(p, "map_index", -1),
                                   int_param(p, "mapped_length", None))
    return JSONResponse(answer, 201)
