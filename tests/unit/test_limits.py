"""Which candidates a pass may queue: pools, max_active_tasks, max_active_tis_per_dag(run)."""

from __future__ import annotations

from scheduler.limits import Busy, Candidate, select

POOLS = {"default_pool": 128}


def candidate(ti_id: int, *, run_pk: int = 1, task_id: str = "t", per_dag: int | None = None,
              per_run: int | None = None, max_active_tasks: int = 16, map_index: int = -1,
              priority: int = 1) -> Candidate:
    return Candidate(ti_id, "d", task_id, "default_pool", 1, priority, map_index,
                     max_active_tasks, per_dag, run_pk, per_run)


def test_max_active_tis_per_dagrun_counts_each_run_apart():
    cands = [candidate(i, run_pk=run, map_index=i, per_run=2) for i, run in
             enumerate([1, 1, 1, 2, 2, 2])]
    busy = Busy()
    busy.run_task_tis[(1, "t")] = 1  # one instance of run 1 already running
    chosen, held = select(cands, busy, POOLS)
    assert chosen == [0, 3, 4] and held


def test_max_active_tis_per_dag_counts_every_run_together():
    cands = [candidate(i, run_pk=1 + i % 2, map_index=i, per_dag=3) for i in range(6)]
    chosen, held = select(cands, Busy(), POOLS)
    assert chosen == [0, 1, 2] and held


def test_max_active_tasks_and_pool_slots_hold_the_rest():
    cands = [candidate(i, map_index=i, max_active_tasks=2) for i in range(4)]
    assert select(cands, Busy(), POOLS) == ([0, 1], True)
    assert select(cands, Busy(), {"default_pool": 1}) == ([0], True)
    assert select([candidate(9)], Busy(), {}) == ([], True)  # an unknown pool queues nothing


def test_higher_priority_goes_first_then_the_lower_map_index():
    cands = [candidate(1, map_index=1), candidate(2, map_index=0), candidate(3, priority=5)]
    assert select(cands, Busy(), POOLS) == ([3, 2, 1], False)
