"""Assets on the Execution API: the events a task's success emits, and what tasks read.

A try that succeeds with outlets sends ``task_outlets`` (its Asset, Asset.ref and
AssetAlias outlets) and ``outlet_events`` (what it set through ``outlet_events[...]``
or yielded as ``Metadata``) with its success. As Airflow 3.3's
``register_asset_changes_in_db``: each outlet asset gets one event per extra the task
set (one with ``{}`` when it set none); a reference resolves to the asset it names; an
event added through an alias the task lists as an outlet creates its asset when new and
names the alias. Every event queues the active, unpaused DAGs scheduled on its asset (or
on the alias) in ``asset_dag_run_queue``; the scheduler turns those into runs
(``scheduler.assets``). All of it commits with the success, in one transaction.

Routes: ``/assets/by-name``, ``/assets/by-uri``, ``/assets/by-alias``,
``/asset-events/by-asset``, ``/asset-events/by-asset-alias`` answer from PostgreSQL;
``consumed_events`` is a run's ``consumed_asset_events`` (``triggering_asset_events``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

import asyncpg
import structlog
from airflow.sdk.api.datamodels._generated import (
    AssetAliasReferenceAssetEventDagRun,
    AssetEventDagRunReference,
    AssetEventResponse,
    AssetEventsResponse,
    AssetProfile,
    AssetReferenceAssetEventDagRun,
    AssetResponse,
    TISuccessStatePayload,
)
from fastapi import APIRouter, Query, Request, Response
from pydantic import AwareDatetime

from shared.db import q
from worker.execution_api.common import Api, api, json_text, model_response, not_found, problem

log = structlog.get_logger()

assets = APIRouter()
asset_events = APIRouter()

Key = tuple[str, str]  # (name, uri)


@dataclass
class Emit:
    """One asset event to record."""

    name: str
    uri: str
    extra: dict[str, Any]
    aliases: list[str] = field(default_factory=list)
    create: bool = False  # first named at run time through an alias: create the asset
    asset_extra: dict[str, Any] = field(default_factory=dict)


# --- a success's events ----------------------------------------------------------------------
def emits_assets(payload: Any) -> bool:
    return isinstance(payload, TISuccessStatePayload) and bool(
        payload.task_outlets or payload.outlet_events)


async def finish_emitting(a: Api, ti: uuid.UUID, payload: TISuccessStatePayload,
                          finish_args: tuple) -> int | None:
    """``api_ti_finish`` and the success's asset events in one transaction; the run's pk,
    or None when the guard matched nothing (then no event is recorded)."""
    async with a.pool.acquire() as conn, conn.transaction():
        run_pk = await conn.fetchval(q("api_ti_finish"), *finish_args)
        if run_pk is not None:
            await register(conn, ti, payload.task_outlets or [], payload.outlet_events or [])
    return run_pk


async def register(conn: asyncpg.Connection, ti: uuid.UUID, outlets: list[AssetProfile],
                   events: list[dict[str, Any]]) -> int:
    """Record the events of try ``ti``'s outlets; how many DAGs they queued."""
    source = await conn.fetchrow(q("asset_ti_source"), ti)
    where = f"DAG {source['dag_id']!r}: task {source['task_id']!r} map_index {source['map_index']}"
    names = [o.name for o in outlets if o.type == "AssetNameRef" and o.name]
    uris = [o.uri for o in outlets if o.type == "AssetUriRef" and o.uri]
    refs: dict[tuple[str, str], Key] = {}
    if names or uris:
        for r in await conn.fetch(q("asset_resolve_refs"), names, uris):
            refs[(r["kind"], r["key"])] = (r["name"], r["uri"])
    try:
        emits = plan(outlets, events, refs)
    except (KeyError, TypeError, ValueError) as exc:
        raise problem(422, "invalid_outlet_events",
                      f"{where}: outlet_events: {type(exc).__name__}: {exc}") from None
    queued = 0
    for e in emits:
        row = await conn.fetchrow(
            q("asset_register_event"), e.name, e.uri, json.dumps(e.extra), source["dag_id"],
            source["task_id"], source["run_id"], source["map_index"], e.aliases, e.create,
            json.dumps(e.asset_extra))
        if row is None:
            log.warning("asset_event_for_unknown_asset", dag_id=source["dag_id"],
                        task_id=source["task_id"], asset=e.name, uri=e.uri)
            continue
        queued += row["queued"]
        log.info("asset_event_registered", dag_id=source["dag_id"], task_id=source["task_id"],
                 run_id=source["run_id"], asset=e.name, aliases=e.aliases, queued_dags=row["queued"])
    return queued


def plan(outlets: list[AssetProfile], events: list[dict[str, Any]],
         refs: dict[tuple[str, str], Key]) -> list[Emit]:
    """The events a success records, as Airflow's ``register_asset_changes_in_db`` decides.

    ``refs`` maps ``("name", name)`` / ``("uri", uri)`` to the asset a reference names.
    """
    extras: dict[Key, list[dict[str, Any]]] = {}
    for event in events:
        if "source_alias_name" not in event:
            key = _key(event["dest_asset_key"])
            extras.setdefault(key, []).append(_extra(event.get("extra")))
    keys: list[Key] = []
    for o in outlets:
        key: Key | None = None
        if o.type == "Asset" and o.name and o.uri:
            key = (o.name, o.uri)
        elif o.type == "AssetNameRef" and o.name:
            key = refs.get(("name", o.name))
        elif o.type == "AssetUriRef" and o.uri:
            key = refs.get(("uri", o.uri))
        if key is None:
            if o.type != "AssetAlias":
                log.warning("asset_outlet_unknown", outlet=o.model_dump(exclude_none=True))
            continue
        if key not in keys:
            keys.append(key)
    emits = [Emit(name, uri, extra) for name, uri in keys
             for extra in extras.get((name, uri)) or [{}]]
    return emits + _alias_emits(outlets, events)


def _alias_emits(outlets: list[AssetProfile], events: list[dict[str, Any]]) -> list[Emit]:
    """Events added through an alias the task lists: one per (asset, asset extra, extra),
    naming every alias it came through."""
    listed = {o.name for o in outlets if o.type == "AssetAlias" and o.name}
    grouped: dict[tuple[Key, str, str], list[str]] = {}
    for event in events:
        alias = event.get("source_alias_name")
        if alias is None or alias not in listed:
            continue
        group = (_key(event["dest_asset_key"]),
                 json.dumps(_extra(event.get("dest_asset_extra")), sort_keys=True),
                 json.dumps(_extra(event.get("extra")), sort_keys=True))
        names = grouped.setdefault(group, [])
        if alias not in names:
            names.append(alias)
    return [Emit(key[0], key[1], json.loads(extra), sorted(names), True, json.loads(asset_extra))
            for (key, asset_extra, extra), names in grouped.items()]


def _key(value: Any) -> Key:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) \
            or not isinstance(value.get("uri"), str):
        raise ValueError(f"dest_asset_key must be {{'name': str, 'uri': str}}, not {value!r}")
    return value["name"], value["uri"]


def _extra(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"extra must be a JSON object, not {type(value).__name__}")
    return value


# --- a run's consumed events -----------------------------------------------------------------
async def consumed_events(conn, dag_id: str, run_id: str) -> list[AssetEventDagRunReference]:
    """The events an asset-triggered run consumed, oldest first."""
    return [AssetEventDagRunReference(
        asset=AssetReferenceAssetEventDagRun(name=r["name"], uri=r["uri"],
                                             extra=json.loads(r["asset_extra"])),
        extra=json.loads(r["extra"]), source_task_id=r["source_task_id"],
        source_dag_id=r["source_dag_id"], source_run_id=r["source_run_id"],
        source_map_index=r["source_map_index"],
        source_aliases=[AssetAliasReferenceAssetEventDagRun(name=n) for n in r["aliases"]],
        timestamp=r["timestamp"])
        for r in await conn.fetch(q("asset_run_events"), dag_id, run_id)]


async def inactive_assets(a: Api, ti: uuid.UUID) -> list[AssetProfile]:
    """The assets the try's inlets and outlets name that Sluice has no record of."""
    rows = await a.pool.fetch(q("asset_inactive_of_ti"), ti)
    return [AssetProfile(name=r["name"], uri=r["uri"], type="Asset") for r in rows]


# --- routes ----------------------------------------------------------------------------------
def _asset(row) -> AssetResponse:
    return AssetResponse(name=row["name"], uri=row["uri"], group=row["group"],
                         extra=json.loads(row["extra"]))


@assets.get("/by-name")
async def asset_by_name(request: Request, name: Annotated[str, Query()]) -> Response:
    row = await api(request).pool.fetchrow(q("asset_by"), name, None)
    if row is None:
        raise not_found(f"Asset with name {name} not found")
    return model_response(_asset(row))


@assets.get("/by-uri")
async def asset_by_uri(request: Request, uri: Annotated[str, Query()]) -> Response:
    row = await api(request).pool.fetchrow(q("asset_by"), None, uri)
    if row is None:
        raise not_found(f"Asset with URI {uri} not found")
    return model_response(_asset(row))


@assets.get("/by-alias")
async def assets_by_alias(request: Request, alias_name: Annotated[str, Query()]) -> Response:
    rows = await api(request).pool.fetch(q("asset_by_alias"), alias_name)
    return json_text(json.dumps([_asset(r).model_dump(mode="json") for r in rows]))


@asset_events.get("/by-asset")
async def events_by_asset(request: Request, name: str | None = None, uri: str | None = None,
                          after: AwareDatetime | None = None, before: AwareDatetime | None = None,
                          ascending: bool = True, limit: int | None = None) -> Response:
    if not name and not uri:
        raise problem(400, "Missing parameter", "name and uri cannot both be None")
    return await _events(api(request), name or None, uri or None, None, after, before,
                         ascending, limit)


@asset_events.get("/by-asset-alias")
async def events_by_alias(request: Request, name: Annotated[str, Query()],
                          after: AwareDatetime | None = None, before: AwareDatetime | None = None,
                          ascending: bool = True, limit: int | None = None) -> Response:
    return await _events(api(request), None, None, name, after, before, ascending, limit)


async def _events(a: Api, name, uri, alias, after, before, ascending: bool,
                  limit: int | None) -> Response:
    rows = await a.pool.fetch(q("asset_events_by"), name, uri, alias, after, before, ascending,
                              limit or None)
    return model_response(AssetEventsResponse(asset_events=[AssetEventResponse(
        id=r["id"], timestamp=r["timestamp"], extra=json.loads(r["extra"]),
        asset=AssetResponse(name=r["name"], uri=r["uri"], group=r["group"],
                            extra=json.loads(r["asset_extra"])),
        created_dagruns=json.loads(r["created_dagruns"]), source_task_id=r["source_task_id"],
        source_dag_id=r["source_dag_id"], source_run_id=r["source_run_id"],
        source_map_index=r["source_map_index"]) for r in rows]))
