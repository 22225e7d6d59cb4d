"""``sluice pools ...`` and ``sluice dags pause|unpause``: what an operator changes by hand.

Both change what the scheduler decides from (``pool`` slots, ``dag.is_paused``)
and then wake it with ``DagsChanged``: it reads pools and paused DAGs again,
gives the runs a limit held back another pass, and starts the runs of a DAG
just unpaused. A wake-up lost with Redis costs time, not the change: the
scheduler reads both again at its next DAG refresh.

Every refusal is one line and exit 1 (an unknown pool or DAG: 2, as
``dags trigger`` does), raised as :class:`Refused`.
"""

from __future__ import annotations

import json

from shared import bus
from shared.config import Settings
from shared.db import q
from shared.messages import DagsChanged
from shared.reconnect import CONNECT_BUDGET_S, Database, ServiceUnavailable, deadline_in, redis_call
from shared.tables import print_table

DEFAULT_POOL = "default_pool"


class Refused(Exception):
    """What the command refuses, in one line, and its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def pool_document(row) -> dict:
    """One pool as ``pools list --json`` / ``pools get --json`` print it (README)."""
    occupied = row["running_slots"] + row["queued_slots"]
    return {"pool": row["name"], "slots": row["slots"], "description": row["description"],
            "running_slots": row["running_slots"], "queued_slots": row["queued_slots"],
            "open_slots": row["slots"] - occupied}


async def _database(settings: Settings, fn, *args, once: bool = False):
    db_url, _ = settings.require_urls()
    db = Database(db_url)
    try:
        call = db.run_once if once else db.run
        return await call(fn, *args, deadline=deadline_in(CONNECT_BUDGET_S))
    finally:
        await db.close()


async def wake_scheduler(settings: Settings) -> None:
    """``DagsChanged`` on the events stream; if Redis is away, say when the change applies."""
    import sys

    _, redis_url = settings.require_urls()
    item = (bus.Streams(settings.stream_prefix).events, DagsChanged())
    try:
        await redis_call(redis_url, bus.publish, [item], deadline=deadline_in(CONNECT_BUDGET_S))
    except ServiceUnavailable as exc:
        print(f"{exc} (the scheduler applies the change when it next reads its DAGs)",
              file=sys.stderr)


# --- pools ---------------------------------------------------------------------------------

async def pools_list(settings: Settings, as_json: bool) -> int:
    rows = await _database(settings, _fetch_pools, None)
    if as_json:
        print(json.dumps([pool_document(r) for r in rows]))
        return 0
    _print_pools(rows)
    return 0


async def pools_get(settings: Settings, name: str, as_json: bool) -> int:
    rows = await _database(settings, _fetch_pools, name)
    if not rows:
        raise Refused(f"Pool {name} does not exist", code=2)
    if as_json:
        print(json.dumps(pool_document(rows[0])))
    else:
        _print_pools(rows)
    return 0


async def pools_set(settings: Settings, name: str, slots: int, description: str | None) -> int:
    """Create the pool or set its slots (and description, when given), as ``airflow pools set``."""
    if not name.strip():
        raise Refused("a pool needs a name")
    if slots < 0:
        raise Refused(f"pool {name!r}: slots must be 0 or more, not {slots} (Sluice has no "
                      "unlimited pool)")
    created = await _database(settings, _upsert_pool, name, slots, description, once=True)
    await wake_scheduler(settings)
    print(f"Pool {name} {'created' if created else 'updated'}")
    return 0


async def pools_delete(settings: Settings, name: str) -> int:
    """Delete a pool that no queued or running task instance holds (never ``default_pool``)."""
    if name == DEFAULT_POOL:
        raise Refused(f"{DEFAULT_POOL} cannot be deleted")
    await _database(settings, _delete_pool, name, once=True)
    await wake_scheduler(settings)
    print(f"Pool {name} deleted")
    return 0


async def _fetch_pools(conn, name: str | None):
    return await conn.fetch(q("pool_rows"), name)


async def _upsert_pool(conn, name: str, slots: int, description: str | None) -> bool:
    return await conn.fetchval(q("upsert_pool"), name, slots, description)


async def _delete_pool(conn, name: str) -> None:
    async with conn.transaction():
        if await conn.fetchval(q("lock_pool"), name) is None:
            raise Refused(f"Pool {name} does not exist", code=2)
        holders = await conn.fetch(q("pool_holders"), name)
        if holders:
            raise Refused(_held_message(name, holders))
        await conn.execute(q("delete_pool_row"), name)


def _held_message(name: str, holders) -> str:
    total = holders[0]["total"]
    first = holders[0]
    index = "" if first["map_index"] < 0 else f" map_index {first['map_index']}"
    more = f" and {total - 1} more" if total > 1 else ""
    return (f"pool {name!r} is held by {total} queued or running task instance(s) (DAG "
            f"{first['dag_id']!r} run {first['run_id']!r} task {first['task_id']!r}{index} "
            f"{first['state']}{more}): delete it when they finish")


def _print_pools(rows) -> None:
    docs = [pool_document(r) for r in rows]
    print_table(("pool", "slots", "running", "queued", "open", "description"),
                [[d["pool"], str(d["slots"]), str(d["running_slots"]), str(d["queued_slots"]),
                  str(d["open_slots"]), d["description"] or ""] for d in docs], whole=("pool",))


# --- pausing -------------------------------------------------------------------------------

async def set_paused(settings: Settings, dag_id: str, paused: bool, as_json: bool) -> int:
    """Pause or unpause a DAG, as ``airflow dags pause|unpause``; says what it was before."""
    was = await _database(settings, _set_paused, dag_id, paused, once=True)
    if was is None:
        raise Refused(f"DAG {dag_id!r} not found (is the scheduler running on this DAGs "
                      "folder? see `sluice dags list`)", code=2)
    await wake_scheduler(settings)
    if as_json:
        print(json.dumps({"dag_id": dag_id, "is_paused": paused, "was_paused": was}))
        return 0
    verb = "paused" if paused else "unpaused"
    print(f"DAG {dag_id} {verb}" if was != paused else f"DAG {dag_id} was already {verb}")
    return 0


async def _set_paused(conn, dag_id: str, paused: bool) -> bool | None:
    return await conn.fetchval(q("set_dag_paused"), dag_id, paused)


async def is_paused(settings: Settings, dag_id: str) -> bool:
    """Whether an active DAG is paused (False for an unknown one: the trigger says that)."""
    return bool(await _database(settings, _is_paused, dag_id))


async def _is_paused(conn, dag_id: str):
    return await conn.fetchval(q("dag_paused"), dag_id)
