"""Asset watchers in the triggerer: event-driven scheduling from a trigger, as Airflow 3.3.

An ``AssetWatcher(name, trigger=BaseEventTrigger)`` of an asset a DAG is scheduled on is a
row of ``asset_watcher`` (kept by the scheduler). Each triggerer claims the rows nobody
runs (or whose triggerer's heartbeat expired and was removed) and runs their triggers
beside the deferred tasks' ones; every event a trigger fires is an event of its asset,
with extra ``{"from_trigger": true, "payload": ...}`` as Airflow writes it, queueing the
DAGs scheduled on the asset like a producer task's success does; the scheduler is woken.
A trigger that ends (``FileDeleteTrigger`` fires once) or fails is started again, as
Airflow's triggerer restarts a trigger that is still assigned to it; a row that is gone
(the DAG changed or stopped being scheduled on the asset) stops its trigger. On shutdown
the rows go back with the triggerer's registration.
"""

from __future__ import annotations

import json
from contextlib import aclosing

import anyio
import asyncpg
import structlog
from structlog.contextvars import bound_contextvars

from shared import bus
from shared.db import DB_ERRORS, TRANSIENT_SQL, persist, q
from shared.messages import DagsChanged
from shared.textcap import cap_error
from triggerer import portal

log = structlog.get_logger()
RESTART_AFTER_S = 1.0  # a trigger that ended runs again after this
MAX_RESTART_AFTER_S = 60.0  # one that keeps failing waits longer each time, up to this
CAPACITY = 1000  # watchers one triggerer takes at most


class AssetWatchers:
    """The watchers this triggerer runs; ``run`` until cancelled."""

    def __init__(self, triggerer) -> None:
        self.trig = triggerer
        self.running: dict[int, anyio.CancelScope] = {}

    async def run(self) -> None:
        """Claim, start and stop watchers every heartbeat; release them when cancelled."""
        try:
            async with anyio.create_task_group() as tg:
                while True:
                    try:
                        await self._sync(tg)
                    except DB_ERRORS + TRANSIENT_SQL as exc:
                        log.warning("asset_watchers_connection_error", error=str(exc))
                    await anyio.sleep(self.trig.settings.triggerer_heartbeat_s)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    async with self.trig.pool.acquire() as conn:
                        await conn.execute(q("asset_watchers_release"), self.trig.id)
                except DB_ERRORS as exc:
                    log.warning("asset_watchers_release_failed", error=str(exc))

    async def _sync(self, tg) -> None:
        claimant = self.trig.id
        async with self.trig.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    await conn.fetch(q("asset_watchers_claim"), claimant, CAPACITY)
            except asyncpg.ForeignKeyViolationError:  # this triggerer's row went meanwhile
                await self.trig.reregister(claimant)
                return
            owned = {r["id"]: dict(r) for r in await conn.fetch(q("asset_watchers_owned"),
                                                                self.trig.id)}
        for watcher_id in set(self.running) - set(owned):
            self.running.pop(watcher_id).cancel()
            log.info("asset_watcher_stopped", watcher_id=watcher_id)
        for watcher_id, row in owned.items():
            if watcher_id not in self.running:
                scope = anyio.CancelScope()
                self.running[watcher_id] = scope
                tg.start_soon(self._watch, row, scope)

    async def _watch(self, row: dict, scope: anyio.CancelScope) -> None:
        """Run the watcher's trigger for as long as this triggerer owns it."""
        ids = {"asset": row["asset_name"], "watcher": row["name"], "watcher_id": row["id"]}
        with scope, bound_contextvars(**ids):
            log.info("asset_watcher_started", trigger=row["classpath"])
            pause = RESTART_AFTER_S
            while True:
                ended_well = await self._run_once(row)
                pause = RESTART_AFTER_S if ended_well else min(pause * 2, MAX_RESTART_AFTER_S)
                await anyio.sleep(pause)

    async def _run_once(self, row: dict) -> bool:
        """One run of the trigger; False when it could not load or raised (it waits longer
        before the next)."""
        af = self.trig.airflow
        try:
            trigger = af.load_trigger({**row, "dag_id": None, "task_id": None, "map_index": None})
        except af.TriggerLoadError as exc:
            log.error("asset_watcher_load_failed", error=str(exc))
            return False
        # as a deferral's trigger runs (airflow_triggers.first_event)
        return await portal.run_with_portal(self._follow(row, trigger))

    async def _follow(self, row: dict, trigger) -> bool:
        """The trigger's events, each an asset event, until it ends (True) or raises."""
        try:
            async with aclosing(trigger.run()) as events:
                async for event in events:
                    await self._emit(row, event.payload)
        except Exception as exc:  # noqa: BLE001 - a user's trigger; it runs again
            log.error("asset_watcher_failed", error=f"{type(exc).__name__}: {exc}")
            return False
        finally:
            await self.trig.airflow.clean_up(trigger)
        return True

    async def _emit(self, row: dict, payload) -> None:
        """The asset's event for one trigger event, and a wake-up for the scheduler."""
        extra = json.dumps({"from_trigger": True, "payload": _jsonable(payload)})

        async def write():
            async with self.trig.pool.acquire() as conn:
                return await conn.fetchrow(q("asset_register_event"), row["asset_name"],
                                           row["asset_uri"], extra, None, None, None, None, [],
                                           False, None)

        done = await persist(write, what="asset_watcher_event")  # the trigger fired: keep it
        log.info("asset_watcher_event", queued_dags=done["queued"] if done else 0)
        if done is not None and done["queued"]:
            # the scheduler creates asset-triggered runs on its next pass over its events
            await bus.publish(self.trig.redis, [(self.trig.streams.events, DagsChanged())])


def _jsonable(payload):
    """A trigger event's payload as stored in the event's extra: the SDK's serde for what
    plain JSON cannot hold, and its text (``repr``) for what neither can (a NaN: PostgreSQL's
    json refuses it, and the event would be lost)."""
    from airflow.sdk.serde import serialize

    for encode in (lambda p: p, serialize):
        try:
            value = encode(payload)
            json.dumps(value, allow_nan=False)
            return value
        except (TypeError, ValueError):
            continue
    return cap_error(repr(payload))
