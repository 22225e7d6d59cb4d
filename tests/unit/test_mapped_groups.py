"""Mapped task groups as the scheduler sees them: load-time refusals, structure, per-index
scheduling. Which value instance *i* of a task inside receives is the Task SDK's."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, dag, task, task_group
from airflow.sdk.definitions._internal.contextmanager import TaskGroupContext

from scheduler.decide import MISSING, TIRow, decide, group_lookups, in_group_states
from scheduler.expansion import RunFacts, run_length
from scheduler.runs import task_instance_rows
from shared.airflow_spec import SpecError, parse
from shared.serialization import DagSpec
from tests.unit.conftest import spec_of as dag_spec_of

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


@task
def make():
    return [1, 2, 3]


@task
def one(x):
    return x


@task
def two(y, x=None):
    return y


@task
def reduce(values):
    return list(values)


def build(body) -> DAG:
    @dag(dag_id="d", start_date=datetime(2026, 1, 1), schedule=None)
    def flow():
        body()

    return flow()


def spec_of(body) -> DagSpec:
    """The scheduler's spec of a DAG whose body is ``body``."""
    return dag_spec_of(build(body))


@pytest.fixture
def group_context_restored():
    """Airflow leaves a mapped group current when its ``__exit__`` raises: put it back."""
    before = list(TaskGroupContext._context)
    yield
    TaskGroupContext._context.clear()
    TaskGroupContext._context.extend(before)


# --- load-time refusals ---------------------------------------------------------------------

@pytest.mark.parametrize("inside", [
    lambda: BashOperator.partial(task_id="b").expand(bash_command=["echo 1"]),
    lambda: one.expand(x=[1, 2]),
], ids=["operator", "taskflow"])
def test_expand_inside_a_mapped_group_is_refused_by_airflow(inside):
    @task_group
    def grp(x):
        inside()

    with pytest.raises(NotImplementedError) as info:
        build(lambda: grp.expand(x=[1]))
    assert str(info.value) == "operator expansion in an expanded task group is not yet supported"


@task_group
def inner(y):
    one(y)


@task_group
def outer(x):
    inner.expand(y=[1, 2])


def test_nested_mapped_groups_load_in_airflow_and_sluice_refuses_them_naming_both_groups():
    d = build(lambda: outer.expand(x=[1]))
    with pytest.raises(SpecError) as info:
        dag_spec_of(d)
    assert str(info.value) == (
        "DAG 'd': task 'outer.inner.one': mapped task group 'outer.inner' is nested in mapped "
        "task group 'outer': nested mapped task groups are not supported")


def test_the_refusal_becomes_the_files_import_error(tmp_path: Path, isolated_dag_modules):
    path = tmp_path / "nested.py"
    path.write_text(
        "from datetime import datetime\n"
        "from airflow.sdk import dag, task, task_group\n"
        "@task\n"
        "def t(x):\n    return x\n"
        "@task_group\n"
        "def inner(y):\n    t(y)\n"
        "@task_group\n"
        "def outer(x):\n    inner.expand(y=[1])\n"
        "@dag(start_date=datetime(2026, 1, 1), schedule=None)\n"
        "def nested():\n    outer.expand(x=[1, 2])\n"
        "nested()\n")
    (result,) = parse(path, tmp_path)
    assert result["dags"] == []
    assert result["error"] == (
        f"{path.resolve()}: DAG 'nested': task 'outer.inner.t': mapped task group 'outer.inner' "
        "is nested in mapped task group 'outer': nested mapped task groups are not supported")


def test_a_plain_group_inside_a_mapped_group_expands_with_it():
    @task_group
    def plain(y):
        return one(y)

    @task_group
    def mapped(x):
        return two(plain(x))

    spec = spec_of(lambda: mapped.expand(x=[1, 2]))
    assert {t.task_id: (t.mapped_group, t.group_id) for t in spec.tasks} == {
        "mapped.plain.one": ("mapped", "mapped.plain"), "mapped.two": ("mapped", "mapped")}
    assert spec.task("mapped.plain.one").mapped == {
        "kind": "dict_of_lists", "inputs": [{"key": "x", "length": 2}], "group": "mapped"}


@task_group
def grp(x, y=0):
    return two(one(x), y)


@task_group
def wild(*args, **kwargs):
    one(1)


@pytest.mark.parametrize("call,exc,message", [
    (lambda: grp.expand(), TypeError, "no arguments to expand against"),
    (lambda: grp.expand(z=[1]), TypeError, "expand() got an unexpected keyword argument 'z'"),
    (lambda: grp.expand(z=[1], w=[2]), TypeError, "expand() got unexpected keyword arguments 'z', 'w'"),
    (lambda: grp.partial(z=1), TypeError, "partial() got an unexpected keyword argument 'z'"),
    (lambda: grp.expand(x="abc"), ValueError,
     "expand() got an unexpected type 'str' for keyword argument 'x'"),
    (lambda: grp.expand(x=3), ValueError, "expand() got an unexpected type 'int' for keyword argument 'x'"),
    (lambda: grp.partial(x=1).expand(x=[1]), TypeError, "mapping already partial argument: x"),
    (lambda: grp.partial(x=1).partial(x=2), TypeError, "duplicate partial argument: x"),
    (lambda: grp.expand_kwargs(3), TypeError, "expected XComArg or list[dict], not int"),
    (lambda: grp.expand_kwargs([1]), TypeError, "expected XComArg or list[dict], not list"),
    (lambda: wild.expand_kwargs([{"a": 1}]), TypeError,
     "calling expand_kwargs() on task group function with * or ** is not supported"),
    (lambda: grp.expand(x=make()["other"]), ValueError,
     "cannot map over XCom with custom key 'other' from <Task(_PythonDecoratedOperator): make>"),
])
def test_group_expand_errors_are_airflows_exactly(call, exc, message):
    with DAG("d", schedule=None), pytest.raises(exc) as info:
        call()
    assert str(info.value) == message


@task(trigger_rule="always")
def anyway(x):
    return x


@task_group
def always_group(x):
    anyway(x)


def test_always_rule_in_an_upstream_driven_group_is_refused(group_context_restored):
    with pytest.raises(ValueError) as info:
        build(lambda: always_group.expand(x=make()))
    assert str(info.value) == ("Task-generated mapping within a mapped task group is not allowed "
                               "with trigger rule 'always'")


def test_always_rule_in_a_group_over_literals_is_allowed():
    spec = spec_of(lambda: always_group.expand(x=[1, 2]))
    assert spec.task("always_group.anyway").trigger_rule == "always"
    assert [(r[0], r[1]) for r in task_instance_rows(spec)] == [
        ("always_group.anyway", 0), ("always_group.anyway", 1)]


# --- structure ------------------------------------------------------------------------------

def test_every_task_of_the_group_expands_over_the_group_input():
    spec = spec_of(lambda: reduce(grp.partial(y=5).expand(x=make())))
    tasks = {t.task_id: t for t in spec.tasks}
    mapped = {"kind": "dict_of_lists", "group": "grp",
              "inputs": [{"key": "x", "xcom": {"op": "plain", "task_id": "make", "key": "return_value"}}]}
    assert tasks["grp.one"].mapped == tasks["grp.two"].mapped == mapped
    assert tasks["grp.one"].mapped_group == tasks["grp.two"].mapped_group == "grp"
    assert tasks["make"].mapped_group is None and tasks["reduce"].mapped is None
    # the producer is upstream of the group's roots only
    assert tasks["grp.one"].upstream == ["make"]
    assert tasks["grp.two"].upstream == ["grp.one"]
    assert tasks["reduce"].upstream == ["grp.two"]
    assert tasks["make"].downstream == ["grp.one"]


def test_literal_group_instances_exist_at_run_creation_with_the_cross_product_length():
    spec = spec_of(lambda: grp.expand(x=[1, 2], y=[3, 4, 5]))
    rows = [(r[0], r[1]) for r in task_instance_rows(spec)]
    assert rows == [("grp.one", i) for i in range(6)] + [("grp.two", i) for i in range(6)]


def test_edges_added_after_the_group_reach_its_tasks():
    def body():
        last = EmptyOperator(task_id="last")
        grp.expand(x=[1]) >> last

    spec = spec_of(body)
    assert spec.task("grp.two").downstream == ["last"]
    assert spec.task("last").upstream == ["grp.two"]


def test_a_group_function_without_return_gives_the_group():
    @task_group
    def g(x):
        one(x)
        two(x)

    def body():
        done = EmptyOperator(task_id="done")
        g.expand(x=[1, 2]) >> done

    assert spec_of(body).task("done").upstream == ["g.one", "g.two"]


# --- scheduling per index -------------------------------------------------------------------

def rows(**tasks: list[tuple[int, str | None]]) -> list[TIRow]:
    out, n = [], 0
    for task_id, instances in tasks.items():
        for map_index, state in instances:
            out.append(TIRow(n, task_id.replace("__", "."), map_index, state))
            n += 1
    return out


def by_id(tis: list[TIRow], ids) -> list[tuple[str, int]]:
    index = {ti.id: ti for ti in tis}
    return sorted((index[i].task_id, index[i].map_index) for i in ids)


def test_depth_first_instance_i_waits_only_for_instance_i():
    spec = spec_of(lambda: reduce(grp.expand(x=[1, 2, 3])))
    tis = rows(grp__one=[(0, "success"), (1, "running"), (2, None)],
               grp__two=[(0, None), (1, None), (2, None)], reduce=[(-1, None)])
    d = decide(spec, tis, NOW)
    assert by_id(tis, d.queue) == [("grp.one", 2), ("grp.two", 0)]
    assert d.end == {}


def test_trigger_rules_inside_the_group_are_evaluated_per_index():
    @task
    def divide(i):
        return 1 // i

    @task(trigger_rule="one_failed")
    def report_failure(i):
        return i

    @task
    def report_success(i):
        return i

    @task_group
    def tg(i):
        divide(i) >> [report_success(i), report_failure(i)]

    spec = spec_of(lambda: tg.expand(i=[0, 1, 2]))
    tis = rows(tg__divide=[(0, "failed"), (1, "success"), (2, "running")],
               tg__report_failure=[(0, None), (1, None), (2, None)],
               tg__report_success=[(0, None), (1, None), (2, None)])
    d = decide(spec, tis, NOW)
    assert by_id(tis, d.queue) == [("tg.report_failure", 0), ("tg.report_success", 1)]
    assert {by_id(tis, [k])[0]: v for k, v in d.end.items()} == {
        ("tg.report_failure", 1): "skipped", ("tg.report_success", 0): "upstream_failed"}


def test_every_placeholder_of_the_group_expands_in_the_same_pass():
    spec = spec_of(lambda: reduce(grp.expand(x=make())))
    tis = rows(make=[(-1, "success")], grp__one=[(-1, None)], grp__two=[(-1, None)],
               reduce=[(-1, None)])
    d = decide(spec, tis, NOW, RunFacts(task_map={"make": 3}))
    assert {by_id(tis, [k])[0]: n for k, n in d.expand.items()} == {
        ("grp.one", -1): 3, ("grp.two", -1): 3}
    assert d.queue == [] and d.end == {} and d.run_state is None


def test_fast_rule_placeholder_is_not_skipped_before_its_instances_exist():
    @task(trigger_rule="one_failed")
    def on_failure(y, x):
        return x

    @task_group
    def g(x):
        on_failure(one(x), x)

    spec = spec_of(lambda: g.expand(x=make()))
    tis = rows(make=[(-1, "success")], g__one=[(-1, None)], g__on_failure=[(-1, None)])
    d = decide(spec, tis, NOW, RunFacts(task_map={"make": 2}))
    assert len(d.expand) == 2 and d.end == {}


def test_zero_length_skips_every_placeholder_and_propagates():
    @task
    def after(v):
        return v

    @task(trigger_rule="all_done")
    def count(v):
        return len(v)

    def body():
        out = grp.expand(x=make())
        after(out)
        count(out)

    spec = spec_of(body)
    tis = rows(make=[(-1, "success")], grp__one=[(-1, None)], grp__two=[(-1, None)],
               after=[(-1, None)], count=[(-1, None)])
    d = decide(spec, tis, NOW, RunFacts(task_map={"make": 0}))
    assert {by_id(tis, [k])[0]: v for k, v in d.end.items()} == {
        ("grp.one", -1): "skipped", ("grp.two", -1): "skipped", ("after", -1): "skipped"}
    assert by_id(tis, d.queue) == [("count", -1)] and d.expand == {}


def test_a_failed_producer_fails_every_task_of_the_group():
    spec = spec_of(lambda: reduce(grp.expand(x=make())))
    tis = rows(make=[(-1, "failed")], grp__one=[(-1, None)], grp__two=[(-1, None)],
               reduce=[(-1, None)])
    d = decide(spec, tis, NOW, RunFacts())
    assert sorted(d.end.values()) == ["upstream_failed"] * 3 and d.run_state == "failed"


def test_a_group_fed_by_another_groups_task_waits_for_all_of_it_and_counts_returned_values():
    @task_group
    def second(n):
        one(n)

    spec = spec_of(lambda: second.expand(n=grp.expand(x=[1, 2, 3])))
    first_done = {"success": 3}
    counts = {"grp.two": first_done}
    assert run_length(spec.task("second.one"), spec, RunFacts(returned={"grp.two": 2}), counts) == 2
    running = {"grp.two": {"success": 2, "running": 1}}
    assert run_length(spec.task("second.one"), spec, RunFacts(returned={"grp.two": 2}), running) is None
    tis = rows(grp__two=[(0, "success"), (1, "success"), (2, "running")], second__one=[(-1, None)])
    assert decide(spec, tis, NOW, RunFacts(returned={"grp.two": 2})).expand == {}


def test_lookups_ask_for_the_same_index_and_the_placeholder_of_in_group_upstreams():
    spec = spec_of(lambda: reduce(grp.expand(x=make())))
    tis = rows(grp__two=[(0, None), (4, None), (5, "queued")], reduce=[(-1, None)])
    assert group_lookups(spec, tis) == [("grp.one", -1), ("grp.one", 0), ("grp.one", 4)]


@pytest.mark.parametrize("states,map_index,expanding,expected", [
    ({("u", 3): "success"}, 3, set(), ["success"]),
    ({("u", -1): None}, 3, set(), [None]),             # upstream not expanded yet: wait on it
    ({("u", -1): "skipped"}, 3, set(), ["skipped"]),    # ...or take its final state
    ({}, 3, set(), []),                                 # no such instance: not an upstream
    ({("u", 0): "success"}, -1, set(), None),           # placeholder: upstream expanded
    ({("u", -1): "scheduled"}, -1, {"u"}, None),        # placeholder: upstream expanding now
    ({("u", -1): None}, -1, set(), [None]),
])
def test_in_group_states(states, map_index, expanding, expected):
    assert in_group_states(["u"], map_index, lambda t, i: states.get((t, i), MISSING),
                           expanding) == expected
