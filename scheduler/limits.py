"""Concurrency limits on queueing: pools, ``max_active_tasks``, ``max_active_tis_per_dag(run)``.

Pure: given the candidates (highest priority first) and what is already
queued or running, keep those that fit. Deferred, scheduled and
up_for_retry instances hold no slot (as in Airflow).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(slots=True)
class Candidate:
    ti_id: int
    dag_id: str
    task_id: str
    pool: str
    pool_slots: int
    priority: int
    map_index: int
    max_active_tasks: int
    max_active_tis_per_dag: int | None
    run_pk: int = 0
    max_active_tis_per_dagrun: int | None = None


@dataclass
class Busy:
    pool_slots: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dag_tasks: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    task_tis: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    run_task_tis: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))


def select(candidates: list[Candidate], busy: Busy, pools: dict[str, int]) -> tuple[list[int], bool]:
    """Ids that may be queued now, and whether any candidate was held back."""
    chosen: list[int] = []
    held = False
    for c in sorted(candidates, key=lambda c: (-c.priority, c.map_index, c.ti_id)):
        total = pools.get(c.pool)
        if (total is None or busy.pool_slots[c.pool] + c.pool_slots > total
                or busy.dag_tasks[c.dag_id] >= c.max_active_tasks
                or (c.max_active_tis_per_dag is not None
                    and busy.task_tis[(c.dag_id, c.task_id)] >= c.max_active_tis_per_dag)
                or (c.max_active_tis_per_dagrun is not None
                    and busy.run_task_tis[(c.run_pk, c.task_id)] >= c.max_active_tis_per_dagrun)):
            held = True
            continue
        busy.pool_slots[c.pool] += c.pool_slots
        busy.dag_tasks[c.dag_id] += 1
        busy.task_tis[(c.dag_id, c.task_id)] += 1
        busy.run_task_tis[(c.run_pk, c.task_id)] += 1
        chosen.append(c.ti_id)
    return chosen, held


def pool_problems(candidates: list[Candidate], pools: dict[str, int]) -> dict[tuple[str, str, str], str]:
    """Why candidates cannot be queued while the pools stay as they are, by (DAG, task, pool).

    As in Airflow, such a task is not failed: it waits, ``scheduled``, until
    its pool is created or grows (``sluice pools set``).
    """
    out: dict[tuple[str, str, str], str] = {}
    for c in candidates:
        total = pools.get(c.pool)
        where = f"DAG {c.dag_id!r}: task {c.task_id!r}"
        if total is None:
            why = (f"{where}: pool {c.pool!r} does not exist; the task waits until it is "
                   f"created (`sluice pools set {c.pool} SLOTS`)")
        elif c.pool_slots > total:
            why = (f"{where}: needs {c.pool_slots} slots of pool {c.pool!r}, which has "
                   f"{total}; the task waits until the pool has that many")
        else:
            continue
        out[(c.dag_id, c.task_id, c.pool)] = why
    return out
