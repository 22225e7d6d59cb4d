"""The pure rules of the task operations (shared/clear.py): which tasks a clear or a
"Mark as" takes along, checked against Airflow 3.3's own code on the same DAGs, and
the plans of a task clear, a mark and a cancel."""

from __future__ import annotations

import itertools
from datetime import datetime

import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, dag, task, task_group

from shared.clear import (
    Instance,
    clear_subset,
    mark_subset,
    plan_cancel,
    plan_clear,
    plan_mark,
    selection_for,
)
from tests.unit import conftest


def scoped_dag() -> DAG:
    """Two setup/teardown scopes, one inside the other, a setup with no teardown, and
    work before, between and after them."""
    with DAG("scoped", schedule=None, start_date=datetime(2026, 1, 1)) as d:
        ops = {n: EmptyOperator(task_id=n) for n in (
            "before", "s1", "w1", "s2", "w2", "t2", "w3", "t1", "after", "s3", "w4")}
        ops["before"] >> ops["s1"] >> ops["w1"] >> ops["s2"] >> ops["w2"]
        ops["w2"] >> ops["t2"].as_teardown(setups=ops["s2"])
        ops["t2"] >> ops["w3"] >> ops["t1"].as_teardown(setups=ops["s1"])
        ops["t1"] >> ops["after"]
        ops["s3"].as_setup() >> ops["w4"]
        ops["w1"] >> ops["w4"]
    return d


def plain_dag() -> DAG:
    with DAG("plain", schedule=None, start_date=datetime(2026, 1, 1)) as d:
        a, b, c, e = (EmptyOperator(task_id=n) for n in "abce")
        a >> b >> c
        a >> e
    return d


@pytest.mark.parametrize("make", [scoped_dag, plain_dag])
def test_clear_takes_what_airflow_partial_subset_takes(make):
    d = make()
    spec = conftest.spec_of(d)
    for task_id, down, up in itertools.product(d.task_dict, (False, True), (False, True)):
        airflow = set(d.partial_subset(task_ids=[task_id], include_downstream=down,
                                       include_upstream=up).task_dict)
        assert clear_subset(spec, {task_id}, downstream=down, upstream=up) == airflow, (
            task_id, down, up)


@pytest.mark.parametrize("make", [scoped_dag, plain_dag])
def test_mark_takes_what_airflow_find_task_relatives_takes(make):
    from airflow.api.common.mark_tasks import find_task_relatives

    d = make()
    spec = conftest.spec_of(d)
    for task_id, down, up in itertools.product(d.task_dict, (False, True), (False, True)):
        airflow = set(find_task_relatives([d.task_dict[task_id]], down, up))
        assert mark_subset(spec, task_id, downstream=down, upstream=up) == airflow, (
            task_id, down, up)


def test_clearing_work_inside_a_scope_takes_its_setup_and_teardown():
    spec = conftest.spec_of(scoped_dag())
    assert clear_subset(spec, {"w2"}, downstream=False, upstream=False) == {
        "w2", "s1", "t1", "s2", "t2"}
    assert clear_subset(spec, {"w4"}, downstream=False, upstream=False) == {"w4", "s3"}


def ti(id_: int, task_id: str, map_index: int = -1, state: str | None = "success",
       try_number: int = 1) -> Instance:
    return Instance(id_, task_id, map_index, state, try_number)


@task(retries=1)
def double(x):
    return 2 * x


@task
def total(values):
    return sum(values)


def fanout_spec():
    @dag(dag_id="fanout", start_date=datetime(2026, 1, 1), schedule=None)
    def fanout():
        total(double.expand(x=[1, 2, 3]))

    return conftest.spec_of(fanout())


def test_one_map_index_with_downstream_clears_that_index_and_the_reduce():
    spec = fanout_spec()
    run = [ti(1, "double", 0), ti(2, "double", 1), ti(3, "double", 2), ti(4, "total")]
    tasks = clear_subset(spec, {"double"}, downstream=True, upstream=False)
    plan = plan_clear(spec, run, selection=selection_for(spec, tasks, "double", 1))
    assert plan.reset == {2: 2, 4: 1}  # try_number + retries
    assert plan.remove == [] and plan.insert == [] and plan.delete == []
    assert plan.whole_tasks == {"total"}  # double's other indexes keep their mapping rows


def test_a_map_index_in_a_mapped_group_takes_the_same_index_downstream_in_it():
    @dag(dag_id="grouped", start_date=datetime(2026, 1, 1), schedule=None)
    def grouped():
        @task_group
        def each(x):
            return total.override(task_id="inner")([double(x)])

        total(each.expand(x=[1, 2]))

    spec = conftest.spec_of(grouped())
    tasks = clear_subset(spec, {"each.double"}, downstream=True, upstream=False)
    assert selection_for(spec, tasks, "each.double", 1) == {
        "each.double": frozenset({1}), "each.inner": frozenset({1}), "total": None}


def test_only_failed_leaves_the_others():
    spec = fanout_spec()
    run = [ti(1, "double", 0), ti(2, "double", 1, "failed"), ti(3, "double", 2),
           ti(4, "total", state="upstream_failed", try_number=0)]
    tasks = clear_subset(spec, {"double"}, downstream=True, upstream=False)
    plan = plan_clear(spec, run, only_failed=True,
                      selection=selection_for(spec, tasks, "double", None))
    assert plan.reset == {2: 2, 4: 0}


def test_mark_skips_what_is_in_the_state_already_and_removed_instances():
    run = [ti(1, "double", 0, "failed"), ti(2, "double", 1), ti(3, "double", 2, "removed"),
           ti(4, "total", state=None, try_number=0)]
    assert plan_mark(run, {"double": None, "total": None}, "success") == {1: "success",
                                                                          4: "success"}


def test_cancel_fails_tries_in_progress_skips_the_rest_and_leaves_teardowns():
    spec = conftest.spec_of(scoped_dag())
    run = [ti(1, "before"), ti(2, "s1"), ti(3, "w1", state="running"),
           ti(4, "w4", state="deferred"), ti(5, "s2", state="queued"),
           ti(6, "w2", state=None, try_number=0), ti(7, "t1", state=None, try_number=0),
           ti(8, "after", state="up_for_retry")]
    changes, ends = plan_cancel(spec, run)
    assert changes == {3: "failed", 4: "failed", 5: "skipped", 6: "skipped", 8: "skipped"}
    assert ends is False  # t1, a teardown, has yet to run: the scheduler ends the run after it
    done = [ti(1, "before"), ti(2, "s1", state="running")]
    assert plan_cancel(spec, done) == ({2: "failed"}, True)
