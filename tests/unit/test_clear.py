"""What clearing does to a finished run: pure planning over the DAG's current version."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

from shared.clear import Instance, plan_clear
from shared.serialization import DagSpec
from tests.unit import conftest
from tests.unit.conftest import gen


@task(retries=2)
def double(x):
    return 2 * x


@task
def total(values):
    return sum(values)


def spec_of(values: list[int] | None) -> DagSpec:
    """``total(double.expand(x=values))``, or over ``gen()`` when ``values`` is None."""
    @dag(dag_id="d", start_date=datetime(2026, 1, 1), schedule=None)
    def d():
        total(double.expand(x=gen() if values is None else values))

    return conftest.spec_of(d())


def ti(id_: int, task_id: str, map_index: int = -1, state: str | None = "success",
       try_number: int = 1) -> Instance:
    return Instance(id_, task_id, map_index, state, try_number)


def test_literal_list_that_shrank_removes_the_extra_instances():
    run = [ti(1, "double", 0), ti(2, "double", 1), ti(3, "double", 2), ti(4, "total")]
    plan = plan_clear(spec_of([5, 6]), run)
    assert plan.remove == [3]
    assert plan.reset == {1: 3, 2: 3, 4: 1}  # try_number + retries
    assert plan.insert == [] and plan.delete == []
    assert plan.touched == [1, 2, 3, 4]


def test_literal_list_that_grew_revives_and_adds():
    run = [ti(1, "double", 0), ti(2, "double", 1, "removed"), ti(3, "total")]
    plan = plan_clear(spec_of([5, 6, 7]), run)
    assert plan.reset == {1: 3, 2: 3, 3: 1}
    assert plan.insert == [("double", 2, 2, "default", "default_pool", 1, 2)]  # weight: downstream
    assert plan.remove == []


def test_cleared_producer_collapses_its_mapped_consumer_to_a_placeholder():
    run = [ti(1, "gen"), ti(2, "double", 0), ti(3, "double", 1), ti(4, "double", 2),
           ti(5, "total")]
    plan = plan_clear(spec_of(None), run)
    assert plan.delete == [3, 4]
    assert plan.to_placeholder == [2]
    assert plan.reset == {1: 1, 2: 3, 5: 1}
    assert plan.cleared_tasks == {"gen", "double", "total"}


def test_only_failed_keeps_successes_and_their_expansion():
    run = [ti(1, "gen"), ti(2, "double", 0), ti(3, "double", 1, "failed", 3),
           ti(4, "total", state="upstream_failed")]
    plan = plan_clear(spec_of(None), run, only_failed=True)
    assert plan.reset == {3: 5, 4: 1}
    assert plan.delete == [] and plan.to_placeholder == [] and plan.remove == []
    assert plan.cleared_tasks == {"double", "total"}


def test_tasks_added_to_or_gone_from_the_dag():
    run = [ti(1, "double", 0), ti(2, "double", 1), ti(3, "old_task"), ti(4, "gone", 0)]
    plan = plan_clear(spec_of([1, 2]), run)
    assert sorted(plan.remove) == [3, 4]
    assert plan.insert == [("total", -1, 0, "default", "default_pool", 1, 1)]
