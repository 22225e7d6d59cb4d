"""Asset-triggered runs: a DAG scheduled on assets gets one run per batch of events.

A producer's success records asset events and queues every asset-scheduled DAG that
names the asset (``asset_dag_run_queue``, written by the Execution API in the same
transaction as the success). Here, as Airflow 3.3's scheduler does, a DAG whose queued
assets satisfy its condition (:func:`shared.airflow_spec.assets.evaluate`) gets one
``asset_triggered`` run consuming every event of its assets since its previous such run,
and the queue rows it took are deleted. A queue row is dated by its asset's latest event
(Airflow keeps the first), so events that came while the DAG could not run yet (its
condition, ``max_active_runs``) are all consumed by its next run, none left behind. Paused DAGs are neither queued nor run; the
events stay and the first run after unpausing consumes them. Several schedulers can do
this at once: the queue rows are taken ``FOR UPDATE SKIP LOCKED``. The watchers of the
assets DAGs are scheduled on are kept in ``asset_watcher`` for the triggerer to run.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime

import asyncpg
import structlog

from shared.airflow_spec.assets import Resolver, evaluate, references
from shared.db import q

log = structlog.get_logger()


async def sync_references(conn: asyncpg.Connection) -> None:
    """The assets and aliases the active DAGs name exist; their schedule references are
    exactly what their conditions name (called when the stored DAGs changed)."""
    rows = await conn.fetch(q("asset_dag_conditions"))
    assets: dict[tuple[str, str], dict] = {}
    aliases: set[str] = set()
    wanted: set[tuple[str, str, str, str]] = set()
    for row in rows:
        for a in json.loads(row["assets"] or "null") or []:
            assets[(a["name"], a["uri"])] = a
        aliases.update(json.loads(row["aliases"] or "null") or [])
        for kind, name, uri in references(json.loads(row["condition"] or "null")):
            wanted.add((row["dag_id"], kind, name or "", uri or ""))
    values = [assets[k] for k in sorted(assets)]  # one lock order for every scheduler
    await conn.execute(q("asset_upsert_declared"), [a["name"] for a in values],
                       [a["uri"] for a in values], [a.get("group") or "asset" for a in values],
                       [json.dumps(a.get("extra") or {}) for a in values], sorted(aliases))
    refs = sorted(wanted)
    await conn.execute(q("asset_sync_references"), *[list(c) for c in zip(*refs, strict=True)]
                       if refs else ([], [], [], []))
    await _sync_watchers(conn)


async def _sync_watchers(conn: asyncpg.Connection) -> None:
    """The asset watchers are exactly those of the assets active DAGs are scheduled on."""
    watchers: dict[tuple[str, str, str], tuple[str, str, str, str, str]] = {}
    for row in await conn.fetch(q("asset_dag_watchers")):
        for w in json.loads(row["watchers"]):
            key = (w["asset"]["name"], w["asset"]["uri"], w["name"])
            watchers.setdefault(key, (*key, w["classpath"], json.dumps(w["kwargs"])))
    columns = [list(c) for c in zip(*watchers.values(), strict=True)] if watchers else [[]] * 5
    async with conn.transaction():
        await conn.execute(q("asset_drop_watchers"), *columns)
        await conn.execute(q("asset_add_watchers"), *columns)


async def create_asset_runs(pool: asyncpg.Pool) -> list[int]:
    """Create the asset-triggered runs whose conditions hold now; their run pks (queued)."""
    async with pool.acquire() as conn:
        queued = await conn.fetch(q("asset_queued_dags"))
        if not queued:
            return []
        ready = await _ready(conn, queued)
        created = []
        for dag_id, catchup in ready:
            pk = await _create_run(conn, dag_id, catchup)
            if pk is not None:
                created.append(pk)
    return created


async def _ready(conn: asyncpg.Connection, queued: list) -> list[tuple[str, bool]]:
    """The queued DAGs whose condition holds and whose max_active_runs leaves room."""
    conditions = {r["dag_id"]: json.loads(r["condition"]) for r in queued if r["condition"]}
    resolver = await _resolver(conn, list(conditions.values()))
    ready = []
    for row in queued:
        cond = conditions.get(row["dag_id"])
        if cond is None:
            continue
        if not evaluate(cond, set(zip(row["names"], row["uris"], strict=True)), resolver):
            log.debug("asset_condition_not_met", dag_id=row["dag_id"])
        elif not row["has_room"]:
            log.debug("asset_triggered_run_waits_max_active_runs", dag_id=row["dag_id"])
        else:
            ready.append((row["dag_id"], bool(row["catchup"])))
    return ready


async def _resolver(conn: asyncpg.Connection, conditions: list[dict]) -> Resolver:
    """What the conditions' aliases and references stand for now."""
    refs = [r for c in conditions for r in references(c)]
    aliases = [name for kind, name, _ in refs if kind == "alias"]
    names = [name for kind, name, _ in refs if kind == "name_ref"]
    uris = [uri for kind, _, uri in refs if kind == "uri_ref"]
    members: dict[str, list[tuple[str, str]]] = {}
    if aliases:
        for r in await conn.fetch(q("asset_alias_members"), aliases):
            members.setdefault(r["alias"], []).append((r["name"], r["uri"]))
    by_name, by_uri = {}, {}
    if names or uris:
        for r in await conn.fetch(q("asset_resolve_refs"), names, uris):
            (by_name if r["kind"] == "name" else by_uri)[r["key"]] = (r["name"], r["uri"])
    return Resolver(members, by_name, by_uri)


async def _create_run(conn: asyncpg.Connection, dag_id: str, catchup: bool) -> int | None:
    """One run for the queue rows of ``dag_id`` this scheduler could take; None if another
    scheduler took them."""
    async with conn.transaction():
        rows = await conn.fetch(q("asset_lock_queue"), dag_id)
        if not rows:
            return None
        due: datetime = rows[0]["created_at"]
        run_id = run_id_for(due)
        row = await conn.fetchrow(q("asset_create_run"), dag_id, run_id, due, catchup,
                                  [r["asset_id"] for r in rows])
    if row is None:
        log.warning("asset_triggered_run_not_created", dag_id=dag_id, run_id=run_id)
        return None
    log.info("asset_triggered_run_created", dag_id=dag_id, run_id=run_id,
             consumed_events=row["consumed"])
    return row["id"]


def run_id_for(due: datetime) -> str:
    """Airflow's run id of an asset-triggered run: its run-after moment and a random suffix."""
    return f"asset_triggered__{due.isoformat()}_{secrets.token_hex(4)}"
