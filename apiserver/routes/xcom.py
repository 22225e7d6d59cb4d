"""``.../xcomEntries``: the XComs tasks pushed, as stored (the SDK's serde JSON)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request

from apiserver import models as m
from apiserver.common import db, every, not_found
from apiserver.sql import q
from shared.runview import _plain

router = APIRouter(tags=["XCom"])
_XCOMS = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/xcomEntries"


def xcom_response(row) -> dict:
    manual = row["run_type"] == "manual"
    return {"key": row["key"], "timestamp": row["created_at"],
            "logical_date": row["logical_date"], "map_index": row["map_index"],
            "task_id": row["task_id"], "dag_id": row["dag_id"], "run_id": row["run_id"],
            "dag_display_name": row["dag_id"], "task_display_name": row["task_id"],
            "run_after": row["logical_date"] if manual else row["data_interval_end"] or row["logical_date"]}


@router.get(_XCOMS, response_model=m.XComCollectionResponse)
async def get_xcom_entries(
    request: Request, dag_id: str, dag_run_id: str, task_id: str,
    xcom_key: str | None = None, map_index: int | None = None,
    limit: Annotated[int, Query(ge=0)] = 50, offset: Annotated[int, Query(ge=0)] = 0,
) -> dict:
    """XCom entries (``~`` for any DAG, run or task), without their values."""
    rows = await db(request).fetch(q("xcoms"), every(dag_id), every(dag_run_id), every(task_id),
                                   xcom_key, map_index, limit, offset)
    return {"xcom_entries": [xcom_response(r) for r in rows],
            "total_entries": rows[0]["total"] if rows else 0}


@router.get(_XCOMS + "/{xcom_key}", response_model=m.XComResponseNative)
async def get_xcom_entry(request: Request, dag_id: str, dag_run_id: str, task_id: str,
                         xcom_key: str, map_index: int = -1, deserialize: bool = False,
                         stringify: bool = False) -> dict:
    """One XCom with its value: as stored, or ``deserialize``d to plain JSON; ``stringify``
    makes the value its JSON text."""
    rows = await db(request).fetch(q("xcoms"), dag_id, dag_run_id, task_id, xcom_key,
                                   map_index, 1, 0)
    if not rows:
        raise not_found(f"XCom entry with key: `{xcom_key}`")
    stored = json.loads(rows[0]["value"])
    value = _plain(stored) if deserialize else stored
    return {**xcom_response(rows[0]), "value": json.dumps(value) if stringify else value}
