"""``depends_on_past`` and ``wait_for_downstream``: waiting on the previous run.

Follows Airflow 3.3's ``PrevDagrunDep`` (``airflow/ti_deps/deps/prev_dagrun_dep.py``):

* the previous run is the DAG's run with the latest logical date before this
  run's; with ``catchup`` manual runs are passed over
  (``DagRun.get_previous_scheduled_dagrun``), without it they count
  (``DagRun.get_previous_dagrun``). No previous run: the task may run;
* with ``catchup``, a previous run dated before the task's ``start_date``
  lets it run;
* a previous run that has no instance of the task: it runs only with
  ``ignore_first_depends_on_past`` (the Task SDK's default is False) and when
  no earlier run has an instance of it; otherwise it waits, as in Airflow;
* else **every** instance of the task in the previous run (all map indexes,
  as Airflow counts them) must be ``success`` or ``skipped``, and with
  ``wait_for_downstream`` every instance of its direct downstream tasks too.

The check is per task, so a pass reads it once per run (``blocked``) and
``decide`` makes the task's instances wait. The scheduler is event driven: a
run's pass wakes the next runs of its DAG when a task they may wait on settles
(``PastWaker``), so they are re-decided then, not at the repair sweep.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from scheduler.decide import TIRow
from shared.db import q
from shared.serialization import DagSpec

SETTLED = frozenset({"success", "skipped"})
NEXT_RUNS = 32  # later active runs a settled past may unblock, at most


@dataclass(frozen=True)
class PrevRun:
    """What the previous run says about the tasks a run may wait on."""

    logical_date: datetime
    instances: dict[str, int] = field(default_factory=dict)     # task -> instances
    unsettled: dict[str, int] = field(default_factory=dict)     # task -> not success/skipped


def watched(dag: DagSpec) -> frozenset[str]:
    """Tasks whose states in one run decide whether the next run's tasks may run."""
    cached = dag.__dict__.get("_past_watched")
    if cached is None:
        found = set()
        for t in dag.tasks:
            if t.depends_on_past:
                found.add(t.task_id)
                if t.wait_for_downstream:
                    found.update(t.downstream)
        cached = frozenset(found)
        object.__setattr__(dag, "__dict__", {**dag.__dict__, "_past_watched": cached})
    return cached


def blocked_by(dag: DagSpec, prev: PrevRun | None, ran_before: frozenset[str]) -> frozenset[str]:
    """The ``depends_on_past`` tasks that must wait, given the previous run (pure).

    ``ran_before`` names the tasks some run before this one has instances of
    (only asked for when the previous run has none of a task).
    """
    if prev is None:
        return frozenset()
    out = set()
    for t in dag.tasks:
        if not t.depends_on_past:
            continue
        if dag.catchup and t.start_date is not None and prev.logical_date < t.start_date:
            continue
        if not prev.instances.get(t.task_id):
            if not (t.ignore_first_depends_on_past and t.task_id not in ran_before):
                out.add(t.task_id)
            continue
        if prev.unsettled.get(t.task_id):
            out.add(t.task_id)
        elif t.wait_for_downstream and any(prev.unsettled.get(d) for d in t.downstream):
            out.add(t.task_id)
    return frozenset(out)


async def blocked(conn: asyncpg.Connection, dag: DagSpec, run, counts: dict[str, Counter]
                  ) -> frozenset[str]:
    """The tasks of ``run`` that wait on its previous run; no query when none could.

    Only tasks with instances still to start (no state, or up for retry: each
    try checks its past, as Airflow's dependencies do) are looked at.
    """
    waiting = [t for t in dag.tasks if t.depends_on_past
               and (counts.get(t.task_id, Counter())[None]
                    or counts.get(t.task_id, Counter())["up_for_retry"])]
    if not waiting:
        return frozenset()
    rows = await conn.fetch(q("past_previous_run"), run["id"], dag.catchup, list(watched(dag)))
    if not rows:
        return frozenset()
    prev = PrevRun(rows[0]["logical_date"],
                   {r["task_id"]: r["n"] for r in rows if r["task_id"] is not None},
                   {r["task_id"]: r["unsettled"] for r in rows if r["task_id"] is not None})
    missing = [t.task_id for t in waiting
               if t.ignore_first_depends_on_past and not prev.instances.get(t.task_id)]
    ran_before = frozenset()
    if missing:
        ran_before = frozenset(r["task_id"] for r in await conn.fetch(
            q("past_tasks_run_before"), dag.dag_id, run["logical_date"], missing))
    return blocked_by(dag, prev, ran_before)


class PastWaker:
    """Wakes the runs after a run whose watched tasks settled, once per change."""

    def __init__(self) -> None:
        self._seen: dict[int, frozenset[str]] = {}

    async def after_pass(self, conn: asyncpg.Connection, dag: DagSpec, run,
                         counts: dict[str, Counter], end: dict[int, str], tis: list[TIRow],
                         finished: bool) -> list[int]:
        """Later active runs to schedule now that ``run`` settled more of its watched tasks.

        ``counts`` are the run's states as the pass read them, ``end`` the
        states it wrote (by instance id, of ``tis``). Nothing is read unless
        something settled since the run's last pass.
        """
        tasks = watched(dag)
        if not tasks:
            return []
        task_of = {ti.id: ti.task_id for ti in tis}
        ended: dict[str, list[str]] = {}
        for ti_id, state in end.items():
            ended.setdefault(task_of.get(ti_id, ""), []).append(state)
        now = _settled(tasks, counts, ended) | ({"<run finished>"} if finished else set())
        if finished:
            self._seen.pop(run["id"], None)
        elif self._seen.get(run["id"]) == now:
            return []
        else:
            self._seen[run["id"]] = now
        if not now:
            return []
        rows = await conn.fetch(q("past_next_runs"), dag.dag_id, run["logical_date"], NEXT_RUNS)
        return [r["id"] for r in rows]

    def forget(self, run_pk: int) -> None:
        self._seen.pop(run_pk, None)


def _settled(tasks: frozenset[str], counts: dict[str, Counter],
             ended: dict[str, list[str]]) -> frozenset[str]:
    """Watched tasks whose every instance is success or skipped, after the pass's writes."""
    out = set()
    for task_id in tasks:
        c = Counter(counts.get(task_id, Counter()))
        for state in ended.get(task_id, ()):
            c[None] -= 1
            c[state] += 1
        if sum(c.values()) > 0 and all(n == 0 or s in SETTLED for s, n in c.items()):
            out.add(task_id)
    return frozenset(out)
