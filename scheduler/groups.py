"""Reading what mapped task groups need to be decided per index: one set-based query."""

from __future__ import annotations

import asyncpg

from scheduler.decide import GroupStates, TIRow, group_lookups
from shared.db import q
from shared.serialization import DagSpec


async def group_states(conn: asyncpg.Connection, spec: DagSpec, run_pk: int,
                       tis: list[TIRow]) -> GroupStates:
    """States of the in-group upstream instances the run's undecided in-group instances need."""
    pairs = group_lookups(spec, tis)
    if not pairs:
        return {}
    rows = await conn.fetch(q("group_ti_states"), run_pk, [p[0] for p in pairs],
                            [p[1] for p in pairs])
    return {(r["task_id"], r["map_index"]): r["state"] for r in rows}
