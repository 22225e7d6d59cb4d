"""``/api/v2/pools``: pools and the slots the unfinished instances hold in them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response

from apiserver import models as m
from apiserver.common import db, not_found, order_key, patterns, unsupported
from apiserver.sql import q

router = APIRouter(tags=["Pool"])
DEFAULT_POOL = "default_pool"


def pool_response(row) -> dict:
    occupied = row["running_slots"] + row["queued_slots"]
    return {"name": row["name"], "slots": row["slots"], "description": row["description"],
            "include_deferred": False, "occupied_slots": occupied,
            "running_slots": row["running_slots"], "queued_slots": row["queued_slots"],
            "scheduled_slots": row["scheduled_slots"], "open_slots": row["slots"] - occupied,
            "deferred_slots": row["deferred_slots"], "team_name": None}


def _check(slots: int | None, include_deferred: bool | None) -> None:
    if slots is not None and slots < 0:
        raise unsupported("unlimited (-1) or negative pool slots")
    if include_deferred:
        raise unsupported("pools that count deferred task instances (include_deferred)")


@router.get("/pools", response_model=m.PoolCollectionResponse)
async def get_pools(request: Request, limit: Annotated[int, Query(ge=0)] = 50,
                    offset: Annotated[int, Query(ge=0)] = 0,
                    order_by: Annotated[list[str] | None, Query()] = None,
                    pool_name_pattern: str | None = None) -> dict:
    order = order_key(order_by, {"id", "name", "pool"}, "Pool")
    rows = await db(request).fetch(q("pools"), None, patterns(pool_name_pattern),
                                   order.replace("pool", "name"), limit, offset)
    return {"pools": [pool_response(r) for r in rows],
            "total_entries": rows[0]["total"] if rows else 0}


@router.get("/pools/{pool_name}", response_model=m.PoolResponse)
async def get_pool(request: Request, pool_name: str) -> dict:
    rows = await db(request).fetch(q("pools"), pool_name, None, "", 1, 0)
    if not rows:
        raise not_found(f"The Pool with name: `{pool_name}` was")
    return pool_response(rows[0])


@router.post("/pools", response_model=m.PoolResponse, status_code=201)
async def post_pool(request: Request, body: m.PoolBody) -> dict:
    _check(body.slots, body.include_deferred)
    if await db(request).fetchval(q("add_pool"), body.name, body.slots,
                                  body.description) is None:
        raise HTTPException(409, f"The Pool with name: `{body.name}` already exists")
    return await get_pool(request, body.name)


@router.patch("/pools/{pool_name}", response_model=m.PoolResponse)
async def patch_pool(request: Request, pool_name: str, body: m.PoolPatchBody,
                     update_mask: Annotated[list[str] | None, Query()] = None) -> dict:
    """Change a pool's slots or description (the default pool keeps its name)."""
    current = await get_pool(request, pool_name)
    fields = set(update_mask) if update_mask else body.model_fields_set
    _check(body.slots if "slots" in fields else None,
           body.include_deferred if "include_deferred" in fields else None)
    name = body.pool if "pool" in fields and body.pool else pool_name
    if pool_name == DEFAULT_POOL and name != pool_name:
        raise HTTPException(400, "Only slots and included_deferred can be modified on "
                                 "Default Pool")
    slots = body.slots if "slots" in fields and body.slots is not None else current["slots"]
    description = body.description if "description" in fields else current["description"]
    await db(request).fetchval(q("put_pool"), pool_name, name, slots, description)
    return await get_pool(request, name)


@router.delete("/pools/{pool_name}", status_code=204)
async def delete_pool(request: Request, pool_name: str) -> Response:
    if pool_name == DEFAULT_POOL:
        raise HTTPException(400, "Default Pool can't be deleted")
    if await db(request).fetchval(q("delete_pool"), pool_name) is None:
        raise not_found(f"The Pool with name: `{pool_name}` was")
    return Response(status_code=204)
