"""``/api/v2/variables`` and ``/api/v2/connections``, stored as ``sluice variables`` /
``sluice connections`` store them: values, passwords and extras are Fernet tokens
(``shared.secrets``). Answers never carry a connection's password, and hide the
values of secret-sounding variable keys and extra fields, as Airflow's do.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response

from apiserver import models as m
from apiserver.common import db, not_found, order_key, patterns, prefixes, state_of
from apiserver.sql import q
from shared import secret_formats as fmt
from shared.db import q as shared_q
from shared.secret_formats import Conn, FormatError
from shared.secrets import SecretsError, secrets_for
from shared.secrets_cli import MASK, _conn_of_row, _row_of_conn, _variable_text, redact_extra

router = APIRouter(tags=["Variable", "Connection"])


def _secrets(request: Request):
    return secrets_for(state_of(request).settings.home)


def _variable(row, request: Request) -> dict:
    try:
        text = _variable_text(row, lambda: _secrets(request))
    except SecretsError as exc:
        raise HTTPException(409, f"variable {row['key']!r}: {exc}") from None
    shown = redact_extra({row["key"]: text})[row["key"]] if text is not None else None
    return {"key": row["key"], "value": shown, "description": row["description"],
            "is_encrypted": row["is_encrypted"], "team_name": None}


def _stored_text(value) -> str:
    """A variable's value as Airflow stores it: a string as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, indent=2)


@router.get("/variables", response_model=m.VariableCollectionResponse)
async def get_variables(request: Request, limit: Annotated[int, Query(ge=0)] = 50,
                        offset: Annotated[int, Query(ge=0)] = 0,
                        order_by: Annotated[list[str] | None, Query()] = None,
                        variable_key_pattern: str | None = None,
                        variable_key_prefix_pattern: str | None = None) -> dict:
    order = order_key(order_by, {"key", "id"}, "Variable").replace("id", "key")
    rows = await db(request).fetch(q("variables"), patterns(variable_key_pattern),
                                   prefixes(variable_key_prefix_pattern), order, limit, offset)
    return {"variables": [_variable(r, request) for r in rows],
            "total_entries": rows[0]["total"] if rows else 0}


@router.get("/variables/{variable_key}", response_model=m.VariableResponse)
async def get_variable(request: Request, variable_key: str) -> dict:
    row = await db(request).fetchrow(q("variable"), variable_key)
    if row is None:
        raise not_found(f"The Variable with key: `{variable_key}` was")
    return _variable(row, request)


@router.post("/variables", response_model=m.VariableResponse, status_code=201)
async def post_variable(request: Request, body: m.VariableBody) -> dict:
    token = _secrets(request).encrypt(_stored_text(body.value))
    if await db(request).fetchval(q("add_variable"), body.key, token, body.description) is None:
        raise HTTPException(409, f"The Variable with key: `{body.key}` already exists")
    return await get_variable(request, body.key)


@router.patch("/variables/{variable_key}", response_model=m.VariableResponse)
async def patch_variable(request: Request, variable_key: str, body: m.VariableBody,
                         update_mask: Annotated[list[str] | None, Query()] = None) -> dict:
    """Replace a variable's value and description (those in ``update_mask`` only, if given)."""
    if body.key != variable_key:
        raise HTTPException(400, "Invalid body, key from request body doesn't match uri parameter")
    row = await db(request).fetchrow(q("variable"), variable_key)
    if row is None:
        raise not_found(f"The Variable with key: `{variable_key}` was")
    fields = set(update_mask or ("value", "description"))
    token = (_secrets(request).encrypt(_stored_text(body.value)) if "value" in fields
             else row["val"])
    description = body.description if "description" in fields else row["description"]
    await db(request).execute(q("put_variable"), variable_key, token, description)
    return await get_variable(request, variable_key)


@router.delete("/variables/{variable_key}", status_code=204)
async def delete_variable(request: Request, variable_key: str) -> Response:
    if await db(request).fetchval(shared_q("cli_variable_delete"), variable_key) is None:
        raise not_found(f"The Variable with key: `{variable_key}` was")
    return Response(status_code=204)


# --- connections -------------------------------------------------------------------------------
def _connection(row, request: Request) -> dict:
    try:
        conn = _conn_of_row(row, lambda: _secrets(request))
    except SecretsError as exc:
        raise HTTPException(409, f"connection {row['conn_id']!r}: {exc}") from None
    extra = json.dumps(redact_extra(conn.extra_dejson)) if conn.extra else conn.extra
    return {"connection_id": conn.conn_id, "conn_type": conn.conn_type,
            "description": conn.description, "host": conn.host, "login": conn.login,
            "schema": conn.schema, "port": conn.port,
            "password": MASK if conn.password else None, "extra": extra, "team_name": None}


def _conn_of_body(body: m.ConnectionBody) -> Conn:
    try:
        fmt.validate_conn_id(body.connection_id)
        fmt.validate_extra(body.extra, body.connection_id)
    except FormatError as exc:
        raise HTTPException(400, str(exc)) from None
    return Conn(conn_id=body.connection_id, conn_type=body.conn_type,
                description=body.description, host=body.host, schema=body.schema_,
                login=body.login, password=body.password, port=body.port,
                extra=body.extra or None)


@router.get("/connections", response_model=m.ConnectionCollectionResponse)
async def get_connections(request: Request, limit: Annotated[int, Query(ge=0)] = 50,
                          offset: Annotated[int, Query(ge=0)] = 0,
                          order_by: Annotated[list[str] | None, Query()] = None,
                          connection_id_pattern: str | None = None,
                          connection_id_prefix_pattern: str | None = None) -> dict:
    order = order_key(order_by, {"connection_id", "id", "conn_type"}, "Connection")
    rows = await db(request).fetch(q("connections"), patterns(connection_id_pattern),
                                   prefixes(connection_id_prefix_pattern), order, limit, offset)
    return {"connections": [_connection(r, request) for r in rows],
            "total_entries": rows[0]["total"] if rows else 0}


@router.get("/connections/{connection_id}", response_model=m.ConnectionResponse)
async def get_connection(request: Request, connection_id: str) -> dict:
    row = await db(request).fetchrow(shared_q("cli_connection_get"), connection_id)
    if row is None:
        raise not_found(f"The Connection with connection_id: `{connection_id}` was")
    return _connection(row, request)


@router.post("/connections", response_model=m.ConnectionResponse, status_code=201)
async def post_connection(request: Request, body: m.ConnectionBody) -> dict:
    row = _row_of_conn(_conn_of_body(body), _secrets(request))
    if await db(request).fetchval(shared_q("cli_connection_add"), *row) is None:
        raise HTTPException(409, f"The connection with connection_id: `{body.connection_id}` "
                                 "already exists")
    return await get_connection(request, body.connection_id)


@router.patch("/connections/{connection_id}", response_model=m.ConnectionResponse)
async def patch_connection(request: Request, connection_id: str, body: m.ConnectionBody,
                           update_mask: Annotated[list[str] | None, Query()] = None) -> dict:
    """Replace a connection's fields: those in ``update_mask``, else those the body sets
    (a password left out, or sent back masked, is kept)."""
    if body.connection_id != connection_id:
        raise HTTPException(400, "The connection_id in the request body does not match the "
                                 "URL parameter")
    row = await db(request).fetchrow(shared_q("cli_connection_get"), connection_id)
    if row is None:
        raise not_found(f"The Connection with connection_id: `{connection_id}` was")
    current = _conn_of_row(row, lambda: _secrets(request))
    new = _conn_of_body(body)
    fields = set(update_mask) if update_mask else body.model_fields_set
    if body.password == MASK:
        fields.discard("password")
    for name in fields - {"connection_id", "team_name"}:
        attr = "schema" if name == "schema_" else name
        if not hasattr(current, attr):
            raise HTTPException(400, f"Invalid update_mask field: {name!r}")
        setattr(current, attr, getattr(new, attr))
    await db(request).fetchval(shared_q("cli_connection_put"),
                               *_row_of_conn(current, _secrets(request)))
    return await get_connection(request, connection_id)


@router.delete("/connections/{connection_id}", status_code=204)
async def delete_connection(request: Request, connection_id: str) -> Response:
    if await db(request).fetchval(shared_q("cli_connection_delete"), connection_id) is None:
        raise not_found(f"The Connection with connection_id: `{connection_id}` was")
    return Response(status_code=204)
