"""``/variables`` and ``/connections``: Airflow's Variables and Connections, on PostgreSQL.

As Airflow's default secrets search path: ``AIRFLOW_VAR_<KEY>`` / ``AIRFLOW_CONN_<ID>``
in the server's environment first, then the tables. Secret values (a variable's value,
a connection's password and extra) are Fernet-encrypted in the tables and never logged.
"""

from __future__ import annotations

import os
from typing import Annotated

from airflow.sdk.api.datamodels._generated import (
    ConnectionResponse,
    VariableKeysResponse,
    VariablePostBody,
    VariableResponse,
)
from fastapi import APIRouter, Path, Query, Request, Response

from shared.db import q
from worker.execution_api.common import api, model_response, not_found

variables = APIRouter()
connections = APIRouter()
VarKey = Annotated[str, Path(min_length=1)]


@variables.get("/keys")
async def variable_keys(request: Request, prefix: str | None = None,
                        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
                        offset: Annotated[int, Query(ge=0)] = 0) -> Response:
    rows = await api(request).pool.fetch(q("api_variable_keys"), prefix, limit, offset)
    total = rows[0]["total"] if rows else 0
    return model_response(VariableKeysResponse(keys=[r["key"] for r in rows],
                                               total_entries=total))


@variables.get("/{variable_key:path}")
async def variable_get(request: Request, variable_key: VarKey) -> Response:
    value = os.environ.get(f"AIRFLOW_VAR_{variable_key.upper()}")
    if value is None:
        a = api(request)
        row = await a.pool.fetchrow(q("api_variable_get"), variable_key)
        if row is None:
            raise not_found(f"Variable with key '{variable_key}' not found")
        value = a.secrets.decrypt(row["val"]) if row["is_encrypted"] else row["val"]
    return model_response(VariableResponse(key=variable_key, value=value))


@variables.put("/{variable_key:path}", status_code=201)
async def variable_put(request: Request, variable_key: VarKey, body: VariablePostBody) -> dict:
    a = api(request)
    await a.pool.execute(q("api_variable_set"), variable_key, a.secrets.encrypt(body.val),
                         body.description)
    return {"message": "Variable successfully set"}


@variables.delete("/{variable_key:path}", status_code=204)
async def variable_delete(request: Request, variable_key: VarKey) -> Response:
    await api(request).pool.execute(q("api_variable_delete"), variable_key)
    return Response(status_code=204)


@connections.get("/{connection_id}")
async def connection_get(request: Request,
                         connection_id: Annotated[str, Path(min_length=1)]) -> Response:
    found = from_environment(connection_id)
    if found is None:
        a = api(request)
        row = await a.pool.fetchrow(q("api_connection_get"), connection_id)
        if row is None:
            raise not_found(f"Connection with ID {connection_id} not found")
        found = ConnectionResponse(**{**dict(row), "password": a.secrets.decrypt(row["password"]),
                                      "extra": a.secrets.decrypt(row["extra"])})
    return model_response(found)


def from_environment(conn_id: str) -> ConnectionResponse | None:
    """``AIRFLOW_CONN_<ID>`` as Airflow reads it: a JSON document or a connection URI."""
    text = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if text is None:
        return None
    from airflow.sdk.definitions.connection import Connection

    parse = Connection.from_json if text.lstrip().startswith("{") else Connection.from_uri
    c = parse(text, conn_id=conn_id)
    return ConnectionResponse(conn_id=conn_id, conn_type=c.conn_type, host=c.host,
                              schema=c.schema, login=c.login, password=c.password,
                              port=c.port, extra=c.extra)
