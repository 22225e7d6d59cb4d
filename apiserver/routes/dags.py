"""``/api/v2/dags`` and ``/api/v2/importErrors``: DAGs as the scheduler parsed them."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from apiserver import models as m
from apiserver.common import (
    db,
    file_token,
    import_error_id,
    not_found,
    order_key,
    patterns,
    prefixes,
    relative_fileloc,
    state_of,
    unsupported,
)
from apiserver.sql import q
from shared.schedules import parse_schedule

router = APIRouter(tags=["DAG"])
DAG_ORDER = {"dag_id", "dag_display_name", "next_dagrun"}


def _schedule_texts(schedule: dict | None) -> tuple[str | None, str | None]:
    parsed = parse_schedule(schedule)
    if parsed is None:
        return None, "Never, external triggers only"
    return parsed.summary(), parsed.description()


TRIVIAL = ("NullTimetable", "OnceTimetable", "ContinuousTimetable", "AssetTriggeredTimetable")


def _periodic(schedule: dict | None) -> bool:
    """Airflow's ``timetable.periodic``: false for its trivial timetables (none, once,
    continuous, assets), read from the stored class name without importing Airflow."""
    parsed = parse_schedule(schedule)
    if parsed is None:
        return False
    return parsed.to_json()["timetable"]["__type"].rpartition(".")[2] not in TRIVIAL


def dag_response(row, dags_folder) -> dict:
    """A ``dag`` row (``sql: dag``) as Airflow's ``DAGResponse``."""
    spec = row["serialized"]
    summary, description = _schedule_texts(spec.get("schedule"))
    tasks = spec.get("tasks", [])
    return {
        "dag_id": row["dag_id"], "dag_display_name": row["dag_id"],
        "is_paused": row["is_paused"], "is_stale": not row["is_active"],
        "last_parsed_time": row["updated_at"], "last_parse_duration": None,
        "last_expired": None, "bundle_name": "dags-folder", "bundle_version": None,
        "relative_fileloc": relative_fileloc(row["fileloc"], dags_folder),
        "fileloc": row["fileloc"], "description": spec.get("description"),
        "timetable_summary": summary, "timetable_description": description,
        "timetable_partitioned": False,
        "timetable_periodic": _periodic(spec.get("schedule")),
        "tags": [{"name": t, "dag_id": row["dag_id"], "dag_display_name": row["dag_id"]}
                 for t in sorted(spec.get("tags") or [])],
        "max_active_tasks": spec.get("max_active_tasks", 16),
        "max_active_runs": spec.get("max_active_runs"),
        "max_consecutive_failed_dag_runs": 0,
        "has_task_concurrency_limits": any(
            t.get("max_active_tis_per_dag") is not None
            or t.get("max_active_tis_per_dagrun") is not None for t in tasks),
        "has_import_errors": row["has_import_errors"],
        "next_dagrun_logical_date": row["next_interval_start"],
        "next_dagrun_data_interval_start": row["next_interval_start"],
        "next_dagrun_data_interval_end": row["next_interval_end"],
        "next_dagrun_run_after": row["next_interval_end"],
        "allowed_run_types": None, "owners": ["airflow"], "is_backfillable": False,
        "file_token": file_token(row["fileloc"]),
    }


def dag_details(row, dags_folder) -> dict:
    spec = row["serialized"]
    timeout = spec.get("dagrun_timeout_s")
    schemas = spec.get("param_schemas") or {}
    return {
        **dag_response(row, dags_folder),
        "catchup": spec.get("catchup", False),
        "dag_run_timeout": None if timeout is None else timedelta(seconds=timeout),
        "asset_expression": None, "doc_md": None,
        "start_date": spec.get("start_date"), "end_date": spec.get("end_date"),
        "is_paused_upon_creation": spec.get("is_paused_upon_creation"),
        "params": {name: {"__class": "airflow.sdk.definitions.param.Param", "value": value,
                          "description": (schemas.get(name) or {}).get("description"),
                          "schema": (schemas.get(name) or {}).get("schema", {})}
                   for name, value in (spec.get("params") or {}).items()},
        "render_template_as_native_obj": False, "template_search_path": None,
        "timezone": (spec.get("schedule") or {}).get("tz") or "UTC",
        "last_parsed": row["updated_at"], "default_args": None,
        "active_runs_count": row["active_runs"],
        "concurrency": spec.get("max_active_tasks", 16), "latest_dag_version": None,
    }


@router.get("/dags", response_model=m.DAGCollectionResponse)
async def get_dags(
    request: Request,
    limit: Annotated[int, Query(ge=0)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    tags: Annotated[list[str] | None, Query()] = None,
    tags_match_mode: Literal["any", "all"] | None = None,
    dag_id_pattern: str | None = None,
    dag_id_prefix_pattern: str | None = None,
    dag_display_name_pattern: str | None = None,
    exclude_stale: bool = True,
    paused: bool | None = None,
    has_import_errors: bool | None = None,
    last_dag_run_state: m.DagRunState | None = None,
    order_by: Annotated[list[str] | None, Query()] = None,
) -> dict:
    """DAGs, filtered and paginated as Airflow's ``get_dags``."""
    order = order_key(order_by, DAG_ORDER, "DAG")
    order = order.replace("dag_display_name", "dag_id")
    match_all = tags_match_mode == "all"
    names = patterns(dag_id_pattern) or patterns(dag_display_name_pattern)
    filters = (names, prefixes(dag_id_prefix_pattern), paused, exclude_stale,
               None if match_all else tags, tags if match_all else None, has_import_errors,
               last_dag_run_state, order)
    rows = await db(request).fetch(q("dags"), *filters, limit, offset)
    if not rows and offset:  # past the end: the total still counts what matched
        rows_total = await db(request).fetch(q("dags"), *filters, 1, 0)
        total = rows_total[0]["total"] if rows_total else 0
    else:
        total = rows[0]["total"] if rows else 0
    folder = state_of(request).settings.dags_folder
    return {"dags": [dag_response(r, folder) for r in rows], "total_entries": total}


async def dag_row(request: Request, dag_id: str):
    row = await db(request).fetchrow(q("dag"), dag_id)
    if row is None:
        raise not_found(f"Dag with id {dag_id} was")
    return row


@router.get("/dags/{dag_id}", response_model=m.DAGResponse)
async def get_dag(request: Request, dag_id: str) -> dict:
    return dag_response(await dag_row(request, dag_id), state_of(request).settings.dags_folder)


@router.get("/dags/{dag_id}/details", response_model=m.DAGDetailsResponse)
async def get_dag_details(request: Request, dag_id: str) -> dict:
    return dag_details(await dag_row(request, dag_id), state_of(request).settings.dags_folder)


@router.patch("/dags/{dag_id}", response_model=m.DAGResponse)
async def patch_dag(request: Request, dag_id: str, body: m.DAGPatchBody,
                    update_mask: Annotated[list[str] | None, Query()] = None) -> dict:
    """Pause or unpause a DAG (its only field Airflow lets one patch)."""
    if update_mask and set(update_mask) - {"is_paused"}:
        raise unsupported(f"patching {sorted(set(update_mask) - {'is_paused'})} of a DAG")
    if await db(request).fetchval(q("pause_dag"), dag_id, body.is_paused) is None:
        raise not_found(f"Dag with id {dag_id} was")
    await _wake_on_pause(request)
    return await get_dag(request, dag_id)


async def _wake_on_pause(request: Request) -> None:
    """The scheduler reads paused DAGs again (``sluice dags pause`` sends the same)."""
    from shared import bus
    from shared.messages import DagsChanged

    state = state_of(request)
    try:
        await bus.publish(state.redis, [(bus.Streams(state.settings.stream_prefix).events,
                                         DagsChanged())])
    except Exception:  # noqa: BLE001 - a wake-up is best effort: the change is in PostgreSQL
        pass


@router.get("/importErrors", response_model=m.ImportErrorCollectionResponse)
async def get_import_errors(
    request: Request,
    limit: Annotated[int, Query(ge=0)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    order_by: Annotated[list[str] | None, Query()] = None,
    filename_pattern: str | None = None,
    filename: str | None = None,
) -> dict:
    """Files that failed to import, as the scheduler last parsed them."""
    order_key(order_by, {"id", "import_error_id", "filename", "timestamp"}, "ImportError")
    wanted = patterns(filename_pattern)
    items = [_import_error(r) for r in await db(request).fetch(q("import_errors"))
             if (filename is None or r["fileloc"] == filename)
             and (wanted is None or any(w.strip("%").lower() in r["fileloc"].lower()
                                        for w in wanted))]
    return {"import_errors": items[offset:offset + limit], "total_entries": len(items)}


def _import_error(row) -> dict:
    return {"import_error_id": import_error_id(row["fileloc"]), "timestamp": row["created_at"],
            "filename": row["fileloc"], "bundle_name": "dags-folder",
            "stack_trace": row["message"]}


@router.get("/importErrors/{import_error_id}", response_model=m.ImportErrorResponse)
async def get_import_error(request: Request, import_error_id: int) -> dict:
    for row in await db(request).fetch(q("import_errors")):
        if _import_error(row)["import_error_id"] == import_error_id:
            return _import_error(row)
    raise not_found(f"The ImportError with import_error_id: `{import_error_id}` was")
