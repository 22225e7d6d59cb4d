"""Operations on a run's task instances: clear, mark success or failed, cancel.

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

``sluice tasks clear`` clears one task (a map index of it, its downstream or
upstream tasks) in a run of any state, with Airflow's rule for which tasks go
along (``DAG.partial_subset``: a task's relevant setups and their teardowns
always, a setup's teardowns). A running try cleared is stopped (its worker's
heartbeat finds the instance no longer its own and kills it) and its try is
kept in the history as failed, as Airflow's ``RESTARTING`` ends; a deferred
one loses its trigger. ``tasks mark-success`` / ``mark-failed`` set states as
Airflow's "Mark as" (``find_task_relatives``: downstream without teardowns,
upstream all), then clear the failed instances downstream so they run again;
``runs cancel`` is Airflow's "mark run failed": running and deferred instances
fail, unfinished ones are skipped, teardowns are left to run.

The plans (``plan_clear``, ``plan_mark``, ``plan_cancel``) and the task rules
are pure; each ``*_run``/``*_tasks`` function applies one in one transaction
that holds the run and its instances locked, and the caller wakes the scheduler.
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
FINISHED_TI = frozenset({"success", "failed", "upstream_failed", "skipped", "removed"})
RUNNING_TI = frozenset({"running", "deferred"})  # a try in progress: it is stopped

#: task_id -> the map indexes picked (``None``: every instance of the task)
Selection = dict[str, "frozenset[int] | None"]


class ClearError(ValueError):
    """The operation cannot be done (unknown task or index, a run in the wrong state, its DAG
    gone); the message is one line naming the DAG, run, task and map index."""


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
    whole_tasks: set[str] = field(default_factory=set)  # cleared at every index: maps go

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


def plan_clear(spec: DagSpec, instances: list[Instance], only_failed: bool = False,
               selection: Selection | None = None) -> ClearPlan:
    """What clearing does to a run's ``instances`` under the DAG ``spec``.

    Without ``selection`` the whole (finished) run is cleared and re-aligned with
    the DAG. With one, only the instances it names are; a task it names whole is
    re-aligned (its literal ``expand`` length, its placeholder when a producer is
    cleared too), a task named by map indexes keeps its instances as they are.
    """
    plan = ClearPlan()
    by_task: dict[str, list[Instance]] = defaultdict(list)
    for ti in instances:
        by_task[ti.task_id].append(ti)
    cleared = {ti.id for ti in instances
               if ti.state != "removed" and _picked(selection, ti)
               and (not only_failed or ti.state in FAILED)}
    plan.cleared_tasks = {ti.task_id for ti in instances if ti.id in cleared}
    plan.whole_tasks = {t for t in plan.cleared_tasks
                        if selection is None or selection.get(t, ()) is None}
    if selection is None:
        for task_id, rows in by_task.items():
            if task_id not in spec.task_map:
                plan.remove += [ti.id for ti in rows if ti.state != "removed"]
    for task in spec.tasks:
        rows = sorted(by_task.get(task.task_id, []), key=lambda ti: ti.map_index)
        if selection is not None and selection.get(task.task_id, ()) is not None:
            # not named, or named by map index: exactly the instances picked
            plan.reset.update({ti.id: ti.try_number + task.retries for ti in rows if ti.id in cleared})
            continue
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


def _picked(selection: Selection | None, ti: Instance) -> bool:
    if selection is None:
        return True
    if ti.task_id not in selection:
        return False
    indexes = selection[ti.task_id]
    return indexes is None or ti.map_index in indexes


def _collapse(plan: ClearPlan, task: TaskSpec, rows: list[Instance]) -> None:
    """Back to one placeholder: the lowest index survives (keeping its try count)."""
    keep, *drop = rows
    plan.delete += [ti.id for ti in drop]
    if keep.map_index != -1:
        plan.to_placeholder.append(keep.id)
    plan.reset[keep.id] = keep.try_number + task.retries
    plan.cleared_tasks.add(task.task_id)
    plan.whole_tasks.add(task.task_id)


# --- which tasks go along: Airflow 3.3's DAGNode relatives and DAG.partial_subset --------------
def relatives(spec: DagSpec, task_id: str, *, upstream: bool) -> set[str]:
    """Every task upstream (or downstream) of ``task_id``, transitively."""
    edge = "upstream" if upstream else "downstream"
    seen: set[str] = set()
    todo = list(getattr(spec.task(task_id), edge))
    while todo:
        tid = todo.pop()
        if tid not in seen:
            seen.add(tid)
            todo += getattr(spec.task(tid), edge)
    return seen


def _teardowns(spec: DagSpec, setup_id: str, but: str | None = None) -> set[str]:
    return {d for d in spec.task(setup_id).downstream if spec.task(d).is_teardown and d != but}


def _upstreams_follow_setups(spec: DagSpec, task_id: str) -> set[str]:
    """Every upstream and, for each upstream setup, its teardowns (``get_upstreams_follow_setups``)."""
    found = relatives(spec, task_id, upstream=True)
    for tid in list(found):
        if spec.task(tid).is_setup:
            found |= _teardowns(spec, tid, task_id)
    return found


def _relevant_setups(spec: DagSpec, task_id: str) -> set[str]:
    """The upstream setups that matter to ``task_id`` with their teardowns
    (``get_upstreams_only_setups_and_teardowns``): a setup with no teardown, or one
    whose teardown is downstream of ``task_id``."""
    later_teardowns = {t for t in relatives(spec, task_id, upstream=False)
                       if spec.task(t).is_teardown}
    found: set[str] = set()
    for tid in relatives(spec, task_id, upstream=True):
        if not spec.task(tid).is_setup:
            continue
        teardowns = _teardowns(spec, tid)
        if not teardowns or teardowns & later_teardowns:
            found |= {tid} | _teardowns(spec, tid, task_id)
    return found


def clear_subset(spec: DagSpec, task_ids: set[str], *, downstream: bool,
                 upstream: bool) -> set[str]:
    """The tasks a clear of ``task_ids`` takes along, as ``DAG.partial_subset`` picks them."""
    also: set[str] = set()
    for tid in task_ids:
        task = spec.task(tid)
        if downstream:
            for rel in relatives(spec, tid, upstream=False):
                also.add(rel)
                other = spec.task(rel)
                if rel not in task_ids and not other.is_setup and not other.is_teardown:
                    also |= _relevant_setups(spec, rel)
        if upstream:
            also |= _upstreams_follow_setups(spec, tid)
        elif not task.is_setup and not task.is_teardown:
            also |= _relevant_setups(spec, tid)
        if task.is_setup and not downstream:
            also |= _teardowns(spec, tid)
    return set(task_ids) | also


def mark_subset(spec: DagSpec, task_id: str, *, downstream: bool, upstream: bool) -> set[str]:
    """The tasks "Mark as" sets along with ``task_id`` (``find_task_relatives``): its
    downstream tasks but teardowns, its upstream tasks all."""
    found = {task_id}
    if downstream:
        found |= {t for t in relatives(spec, task_id, upstream=False) if not spec.task(t).is_teardown}
    if upstream:
        found |= relatives(spec, task_id, upstream=True)
    return found


def selection_for(spec: DagSpec, task_ids: set[str], task_id: str,
                  map_index: int | None) -> Selection:
    """``task_ids`` whole, but for ``map_index``: the named task, and the tasks of its mapped
    task group, at that index only (as Airflow's ``find_relevant_relatives``)."""
    group = spec.task(task_id).mapped_group
    def at_index(tid: str) -> bool:
        return map_index is not None and (
            tid == task_id or (group is not None and spec.task(tid).mapped_group == group))
    return {tid: frozenset({map_index}) if at_index(tid) else None for tid in task_ids}


# --- marking and cancelling: pure ------------------------------------------------------------
def plan_mark(instances: list[Instance], selection: Selection, state: str) -> dict[int, str]:
    """The picked instances not in ``state`` already (nor removed) -> ``state``."""
    return {ti.id: state for ti in instances
            if _picked(selection, ti) and ti.state != state and ti.state != "removed"}


def _is_teardown(spec: DagSpec | None, task_id: str) -> bool:
    return spec is not None and task_id in spec.task_map and spec.task(task_id).is_teardown


def plan_cancel(spec: DagSpec | None, instances: list[Instance]) -> tuple[dict[int, str], bool]:
    """Airflow's "mark run failed": running and deferred instances fail, unfinished ones are
    skipped, teardowns are left alone; the run fails now unless a teardown has yet to end
    (then the scheduler ends it after them)."""
    changes: dict[int, str] = {}
    teardown_left = False
    for ti in instances:
        if ti.state in FINISHED_TI:
            continue
        if _is_teardown(spec, ti.task_id):
            teardown_left = True
        else:
            changes[ti.id] = "failed" if ti.state in RUNNING_TI else "skipped"
    return changes, not teardown_left


# --- applying, one transaction each ----------------------------------------------------------
async def _locked(conn: asyncpg.Connection, run_pk: int, *,
                  need_spec: bool = True) -> tuple[asyncpg.Record, DagSpec | None, list[Instance]]:
    """The run, its DAG and its instances, all locked until the transaction ends."""
    run = await conn.fetchrow(q("lock_run_for_clear"), run_pk)
    if run is None:
        raise ClearError(f"run {run_pk} not found")
    serialized = await conn.fetchval(q("task_spec"), run["dag_id"])
    if serialized is None and need_spec:
        raise ClearError(f"DAG {run['dag_id']!r} of run {run['run_id']!r} is no longer parsed")
    spec = DagSpec.model_validate(serialized) if serialized is not None else None
    rows = [Instance(r["id"], r["task_id"], r["map_index"], r["state"], r["try_number"])
            for r in await conn.fetch(q("lock_run_instances"), run["id"])]
    return run, spec, rows


def _where(run, task_id: str, map_index: int | None = None) -> str:
    index = "" if map_index is None else f" map index {map_index}"
    return f"task {task_id!r}{index} of run {run['run_id']!r} of DAG {run['dag_id']!r}"


def _check_target(run, spec: DagSpec, rows: list[Instance], task_id: str,
                  map_index: int | None) -> None:
    """One line naming what is wrong when the task or its index is not in the run."""
    if task_id not in spec.task_map:
        raise ClearError(f"task {task_id!r} is not in DAG {run['dag_id']!r} (run {run['run_id']!r})")
    have = {ti.map_index for ti in rows if ti.task_id == task_id}
    if not have:
        raise ClearError(f"{_where(run, task_id)} has no task instance (the run has not started)")
    if map_index is not None and map_index not in have:
        shown = f"{min(have)}..{max(have)}" if len(have) > 1 else str(min(have))
        raise ClearError(f"{_where(run, task_id)} has no map index {map_index} "
                         f"(its map indexes: {shown})")


def _listed(rows: list[Instance], ids, new_states: dict[int, str] | None = None) -> list[dict]:
    """The instances ``ids`` as the commands print them: their state before the change
    (and after it, given ``new_states``), by task and map index."""
    wanted = set(ids)
    return [{"task_id": ti.task_id, "map_index": ti.map_index, "state": ti.state,
             **({"new_state": new_states[ti.id]} if new_states is not None else {})}
            for ti in sorted(rows, key=lambda t: (t.task_id, t.map_index)) if ti.id in wanted]


async def clear_run(conn: asyncpg.Connection, run_pk: int, *, only_failed: bool = False,
                    unfinished_too: bool = False) -> dict:
    """Clear a finished run (by primary key: ``runview.find_run``) in one transaction.

    ``unfinished_too``: a queued or running run too, as Airflow's Execution API clears
    one for ``reset_dag_run`` (its running tries are stopped, as ``clear_tasks`` stops
    them). The caller wakes the scheduler.
    """
    async with conn.transaction():
        run, spec, rows = await _locked(conn, run_pk)
        if run["state"] not in FINISHED_RUN and not unfinished_too:
            raise ClearError(f"run {run['run_id']!r} of DAG {run['dag_id']!r} is {run['state']}: "
                             "only a finished run can be cleared")
        plan = plan_clear(spec, rows, only_failed)
        await _apply(conn, run, plan)
    return {"run_pk": run["id"], "dag_id": run["dag_id"], "run_id": run["run_id"],
            "cleared": len(plan.reset), "removed": len(plan.remove),
            "added": len(plan.insert)}


async def clear_tasks(conn: asyncpg.Connection, run_pk: int, task_id: str, *,
                      map_index: int | None = None, downstream: bool = False,
                      upstream: bool = False, only_failed: bool = False) -> dict:
    """Clear ``task_id`` (at ``map_index``, with what goes along) in a run of any state; a
    finished run is queued again. The caller wakes the scheduler."""
    async with conn.transaction():
        run, spec, rows = await _locked(conn, run_pk)
        _check_target(run, spec, rows, task_id, map_index)
        tasks = clear_subset(spec, {task_id}, downstream=downstream, upstream=upstream)
        plan = plan_clear(spec, rows, only_failed, selection_for(spec, tasks, task_id, map_index))
        if _changes(plan):  # nothing to clear (none failed, say): the run is left as it is
            await _apply(conn, run, plan)
    return {"run_pk": run["id"], "dag_id": run["dag_id"], "run_id": run["run_id"],
            "cleared": _listed(rows, plan.reset), "removed": len(plan.remove),
            "added": len(plan.insert)}


async def mark_tasks(conn: asyncpg.Connection, run_pk: int, task_id: str, state: str, *,
                     map_index: int | None = None, downstream: bool = False,
                     upstream: bool = False) -> dict:
    """Airflow's "Mark as" ``state`` (success or failed), then its clear of the failed
    instances downstream; a finished run goes back to the scheduler, which decides its
    state again. The caller wakes the scheduler."""
    async with conn.transaction():
        run, spec, rows = await _locked(conn, run_pk)
        _check_target(run, spec, rows, task_id, map_index)
        tasks = mark_subset(spec, task_id, downstream=downstream, upstream=upstream)
        changes = plan_mark(rows, selection_for(spec, tasks, task_id, map_index), state)
        if not changes:
            raise ClearError(f"{_where(run, task_id, map_index)} is already {state}")
        await _set_states(conn, changes)
        after = [Instance(ti.id, ti.task_id, ti.map_index, changes.get(ti.id, ti.state),
                          ti.try_number) for ti in rows]
        below = clear_subset(spec, {task_id}, downstream=True, upstream=False) - {task_id}
        plan = plan_clear(spec, after, True, {tid: None for tid in below})
        if _changes(plan):
            await _apply(conn, run, plan)
        elif run["state"] in FINISHED_RUN:
            await conn.execute(q("reopen_run"), run["id"])
    return {"run_pk": run["id"], "dag_id": run["dag_id"], "run_id": run["run_id"],
            "marked": _listed(rows, changes, changes), "cleared": _listed(rows, plan.reset)}


async def cancel_run(conn: asyncpg.Connection, run_pk: int) -> dict:
    """Airflow's "mark run failed" (``plan_cancel``) in one transaction. Workers stop the
    tries of the instances failed here at their next heartbeat, the triggerer drops their
    triggers. The caller wakes the scheduler."""
    async with conn.transaction():
        run, spec, rows = await _locked(conn, run_pk, need_spec=False)
        if run["state"] in FINISHED_RUN:
            raise ClearError(f"run {run['run_id']!r} of DAG {run['dag_id']!r} is already "
                             f"{run['state']}")
        changes, ends = plan_cancel(spec, rows)
        await _set_states(conn, changes)
        if ends:
            await conn.execute(q("cancel_run"), run["id"])
    return {"run_pk": run["id"], "dag_id": run["dag_id"], "run_id": run["run_id"],
            "run_state": "failed" if ends else "running",
            "changed": _listed(rows, changes, changes)}


async def _set_states(conn: asyncpg.Connection, changes: dict[int, str]) -> None:
    ids = list(changes)
    await conn.execute(q("delete_triggers_of_tis"), ids)
    await conn.execute(q("set_ti_states"), ids, [changes[i] for i in ids])


def _changes(plan: ClearPlan) -> bool:
    return bool(plan.reset or plan.remove or plan.insert or plan.delete)


async def _apply(conn: asyncpg.Connection, run, plan: ClearPlan) -> None:
    """Write a clear: a finished run is queued again, an active one counts the clear."""
    touched = plan.touched
    await conn.execute(q("delete_triggers_of_tis"), touched)
    await conn.execute(q("delete_xcoms_of_tis"), touched)
    await conn.execute(q("delete_task_maps_of_tis"), touched)
    await conn.execute(q("delete_task_maps"), run["id"], sorted(plan.whole_tasks))
    await conn.execute(q("delete_tis"), plan.delete)
    await conn.execute(q("tis_to_placeholder"), plan.to_placeholder)
    await conn.execute(q("remove_tis"), plan.remove)
    await conn.execute(q("reset_tis"), list(plan.reset), list(plan.reset.values()))
    if plan.insert:
        cols = list(zip(*plan.insert, strict=True))
        await conn.execute(q("insert_tis"), run["id"], *[list(c) for c in cols])
    if run["state"] in FINISHED_RUN:
        await conn.execute(q("requeue_cleared_run"), run["id"])
    else:
        await conn.execute(q("count_clear"), run["id"])
