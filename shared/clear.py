"""Clearing a finished run so that it runs again, against the DAG as it is now.

``sluice runs clear RUN_ID`` is Airflow's "Clear" of a DAG run. Cleared
instances go back to no state with their retries renewed
(``max_tries = try_number + retries``: the next try is numbered on from the
last one), their XComs and mapping lengths are deleted, and the run is
queued again for the scheduler. ``--only-failed`` clears just the ``failed``
and ``upstream_failed`` instances.

The run is re-aligned with the DAG's current version, as Airflow's
``verify_integrity`` does: when a literal ``expand`` list shrank, the extra
instances become ``removed``; when it grew, the new indexes get instances
(and ``removed`` ones in range come back); tasks added to the DAG get
instances and tasks gone from it are ``removed``. A mapped task whose
producer is cleared goes back to one ``-1`` placeholder, expanded again from
the producer's new output.

``plan_clear`` is pure; ``clear_run`` applies a plan in one transaction.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import asyncpg

from scheduler.expansion import literal_length, mapped_producers
from shared.db import q
from shared.serialization import DagSpec, TaskSpec

FAILED = frozenset({"failed", "upstream_failed"})
FINISHED_RUN = frozenset({"success", "failed"})


class ClearError(ValueError):
    """The run cannot be cleared (unknown, still active, or its DAG is gone)."""


@dataclass(frozen=True)
class Instance:
    id: int
    task_id: str
    map_index: int
    state: str | None
    try_number: int


@dataclass
class ClearPlan:
    reset: dict[int, int] = field(default_factory=dict)   # ti id -> new max_tries
    remove: list[int] = field(default_factory=list)        # ti ids -> 'removed'
    delete: list[int] = field(default_factory=list)        # ti ids dropped by a collapse
    to_placeholder: list[int] = field(default_factory=list)  # ti ids that become map_index -1
    insert: list[tuple] = field(default_factory=list)      # rows for ``insert_tis``
    cleared_tasks: set[str] = field(default_factory=set)

    @property
    def touched(self) -> list[int]:
        """Instances whose XComs go: every one reset, removed or dropped."""
        return sorted({*self.reset, *self.remove, *self.delete})


def _new_row(task: TaskSpec, map_index: int) -> tuple:
    return (task.task_id, map_index, task.retries, task.queue, task.pool, task.pool_slots,
            task.priority_weight)


def _wanted_indexes(task: TaskSpec, collapse: bool) -> set[int] | None:
    """The map indexes ``task`` must have now, or ``None`` to keep the ones it has."""
    if task.mapped is None:
        return {-1}
    n = literal_length(task.mapped)
    if n is not None:
        return set(range(n)) or {-1}
    return {-1} if collapse else None


def plan_clear(spec: DagSpec, instances: list[Instance], only_failed: bool = False) -> ClearPlan:
    """What clearing does to a finished run's ``instances`` under the DAG ``spec``."""
    plan = ClearPlan()
    by_task: dict[str, list[Instance]] = defaultdict(list)
    for ti in instances:
        by_task[ti.task_id].append(ti)
    cleared = {ti.id for ti in instances
               if ti.state != "removed" and (not only_failed or ti.state in FAILED)}
    plan.cleared_tasks = {ti.task_id for ti in instances if ti.id in cleared}
    for task_id, rows in by_task.items():
        if task_id not in spec.task_map:
            plan.remove += [ti.id for ti in rows if ti.state != "removed"]
    for task in spec.tasks:
        rows = sorted(by_task.get(task.task_id, []), key=lambda ti: ti.map_index)
        collapse = task.mapped is not None and bool(
            mapped_producers(task.mapped) & plan.cleared_tasks)
        if collapse and rows:
            _collapse(plan, task, rows)
            continue
        wanted = _wanted_indexes(task, collapse)
        have = {ti.map_index for ti in rows}
        for ti in rows:
            if wanted is not None and ti.map_index not in wanted:
                if ti.state != "removed":
                    plan.remove.append(ti.id)
            elif ti.id in cleared or ti.state == "removed":
                plan.reset[ti.id] = ti.try_number + task.retries
        if wanted is not None:
            plan.insert += [_new_row(task, i) for i in sorted(wanted - have)]
    return plan


def _collapse(plan: ClearPlan, task: TaskSpec, rows: list[Instance]) -> None:
    """Back to one placeholder: the lowest index survives (keeping its try count)."""
    keep, *drop = rows
    plan.delete += [ti.id for ti in drop]
    if keep.map_index != -1:
        plan.to_placeholder.append(keep.id)
    plan.reset[keep.id] = keep.try_number + task.retries
    plan.cleared_tasks.add(task.task_id)


async def clear_run(conn: asyncpg.Connection, run_pk: int, *, only_failed: bool = False) -> dict:
    """Clear a finished run (by primary key: ``runview.find_run``) in one transaction.

    The caller wakes the scheduler.
    """
    async with conn.transaction():
        run = await conn.fetchrow(q("lock_run_for_clear"), run_pk)
        if run is None:
            raise ClearError(f"run {run_pk} not found")
        run_id = run["run_id"]
        if run["state"] not in FINISHED_RUN:
            raise ClearError(f"run {run_id!r} of DAG {run['dag_id']!r} is {run['state']}: "
                             "only a finished run can be cleared")
        serialized = await conn.fetchval(q("task_spec"), run["dag_id"])
        if serialized is None:
            raise ClearError(f"DAG {run['dag_id']!r} of run {run_id!r} is no longer parsed")
        spec = DagSpec.model_validate(serialized)
        rows = [Instance(r["id"], r["task_id"], r["map_index"], r["state"], r["try_number"])
                for r in await conn.fetch(q("run_instances_for_clear"), run["id"])]
        plan = plan_clear(spec, rows, only_failed)
        await _apply(conn, run["id"], plan)
    return {"run_pk": run["id"], "dag_id": run["dag_id"], "run_id": run_id,
            "cleared": len(plan.reset), "removed": len(plan.remove),
            "added": len(plan.insert)}


async def _apply(conn: asyncpg.Connection, run_pk: int, plan: ClearPlan) -> None:
    await conn.execute(q("delete_xcoms_of_tis"), plan.touched)
    await conn.execute(q("delete_task_maps"), run_pk, sorted(plan.cleared_tasks))
    await conn.execute(q("delete_tis"), plan.delete)
    await conn.execute(q("tis_to_placeholder"), plan.to_placeholder)
    await conn.execute(q("remove_tis"), plan.remove)
    await conn.execute(q("reset_tis"), list(plan.reset), list(plan.reset.values()))
    if plan.insert:
        cols = list(zip(*plan.insert, strict=True))
        await conn.execute(q("insert_tis"), run_pk, *[list(c) for c in cols])
    await conn.execute(q("requeue_cleared_run"), run_pk)
