"""Pure rules of pools and pausing: why a task waits for its pool, whether a new DAG starts paused."""

from __future__ import annotations

import pytest

from scheduler.limits import Busy, Candidate, pool_problems, select
from scheduler.parsing import paused_upon_creation


def _cand(ti_id: int, task_id: str, pool: str, slots: int = 1) -> Candidate:
    return Candidate(ti_id, "d", task_id, pool, slots, 1, -1, 16, None)


def test_an_unknown_pool_or_one_too_small_is_said_and_the_task_waits():
    pools = {"default_pool": 128, "tiny": 1}
    cands = [_cand(1, "lost", "nowhere"), _cand(2, "wide", "tiny", 2), _cand(3, "ok", "tiny"),
             _cand(4, "lost", "nowhere")]
    assert pool_problems(cands, pools) == {
        ("d", "lost", "nowhere"): "DAG 'd': task 'lost': pool 'nowhere' does not exist; the task "
                                  "waits until it is created (`sluice pools set nowhere SLOTS`)",
        ("d", "wide", "tiny"): "DAG 'd': task 'wide': needs 2 slots of pool 'tiny', which has 1; "
                               "the task waits until the pool has that many"}
    assert select(cands, Busy(), pools) == ([3], True)


def test_pool_slots_are_shared_across_dags_and_runs():
    busy = Busy()
    busy.pool_slots["tiny"] = 1  # another DAG's instance runs in it
    assert select([_cand(1, "a", "tiny")], busy, {"tiny": 2}) == ([1], False)
    assert select([_cand(2, "a", "tiny")], busy, {"tiny": 2}) == ([], True)


@pytest.mark.parametrize(("own", "default", "paused"), [
    (None, True, True), (None, False, False), (False, True, False), (True, False, True)])
def test_a_new_dag_starts_paused_by_its_own_flag_else_the_setting(own, default, paused):
    assert paused_upon_creation({"dag_id": "d", "is_paused_upon_creation": own}, default) is paused
