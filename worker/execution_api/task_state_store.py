"""``/store/ti``: the task state store, what a task keeps across its tries, on PostgreSQL.

Airflow 3.3's routes (``execution_api/routes/task_state_store.py``): a value is JSON,
scoped to the instance (DAG, run, task, map index) the try belongs to, so a retry
reads what its earlier try wrote -- a ``KubernetesPodOperator`` finds the pod to
reattach to this way (``reattach_on_restart``, its default). A missing key is 404,
which the SDK's client turns into "not found" for the task. Only the token's own try
may use its store (403 otherwise), as Airflow's ``ti:self`` scope.
"""

from __future__ import annotations

import json
from typing import Annotated

from airflow.sdk.api.datamodels._generated import TaskStateStorePutBody, TaskStateStoreResponse
from fastapi import APIRouter, Path, Request, Response

from shared.db import q
from worker.execution_api.common import api, model_response, not_found
from worker.execution_api.task_instances import TiId

router = APIRouter()
Key = Annotated[str, Path(min_length=1)]


@router.get("/{task_instance_id}/{key:path}")
async def store_get(request: Request, task_instance_id: TiId, key: Key) -> Response:
    value = await api(request).pool.fetchval(q("api_store_get"), task_instance_id, key)
    if value is None:
        raise not_found(f"Task state store key {key!r} not found")
    return model_response(TaskStateStoreResponse(value=json.loads(value)))


@router.put("/{task_instance_id}/{key:path}", status_code=204)
async def store_set(request: Request, task_instance_id: TiId, key: Key,
                    body: TaskStateStorePutBody) -> Response:
    stored = await api(request).pool.fetchval(q("api_store_set"), task_instance_id, key,
                                              json.dumps(body.value), body.expires_at)
    if stored is None:
        raise not_found(f"Task instance {task_instance_id} not found")
    return Response(status_code=204)


@router.delete("/{task_instance_id}/{key:path}", status_code=204)
async def store_delete(request: Request, task_instance_id: TiId, key: Key) -> Response:
    await api(request).pool.execute(q("api_store_delete"), task_instance_id, key)
    return Response(status_code=204)


@router.delete("/{task_instance_id}", status_code=204)
async def store_clear(request: Request, task_instance_id: TiId) -> Response:
    """Every key of the instance's store."""
    await api(request).pool.execute(q("api_store_delete"), task_instance_id, None)
    return Response(status_code=204)
