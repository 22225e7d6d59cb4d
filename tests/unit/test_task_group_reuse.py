"""Group ids as Airflow gives them: reused ``@task_group`` functions get ``g__1``, ``g__2``...;
a second plain ``TaskGroup`` with a taken id is refused instead of merged."""

from __future__ import annotations

from datetime import datetime

import pytest

from shared.dagbag import load_file
from shared.sdk import DAG, EmptyOperator, TaskGroup, dag, task, task_group
from shared.sdk.exceptions import DuplicateTaskIdFound
from shared.sdk.mapped import MappedOperator
from shared.sdk.task_group import MappedTaskGroup
from shared.serialization import DagSpec, serialize_dag


@task
def work(x=None):
    return x


@task
def make():
    return [1, 2]


@task_group
def process():
    EmptyOperator(task_id="start") >> work()


@task_group
def mapped(x):
    work(x)


def build(body) -> DAG:
    @dag(dag_id="d", start_date=datetime(2026, 1, 1))
    def flow():
        body()

    return flow()


def group_ids(group: TaskGroup) -> list[str]:
    return [k for k, v in group.children.items() if isinstance(v, TaskGroup)]


# --- @task_group called more than once --------------------------------------------------------

def test_each_call_of_a_group_function_gets_the_next_suffix():
    d = build(lambda: [process() for _ in range(3)])
    assert group_ids(d.task_group) == ["process", "process__1", "process__2"]
    assert sorted(d.task_ids) == sorted(
        f"{g}.{t}" for g in ("process", "process__1", "process__2") for t in ("start", "work"))


def test_each_reused_group_keeps_its_own_edges():
    def body():
        first, second = process(), process()
        first >> second

    d = build(body)
    assert d.get_task("process.work").upstream_task_ids == {"process.start"}
    assert d.get_task("process__1.work").upstream_task_ids == {"process__1.start"}
    assert d.get_task("process__1.start").upstream_task_ids == {"process.work"}


def test_a_returned_task_is_forwarded_from_every_call():
    @task_group
    def step(x):
        return work(x)

    d = build(lambda: work(step(step(1))))
    assert d.get_task("step__1.work").upstream_task_ids == {"step.work"}
    assert d.get_task("work").upstream_task_ids == {"step__1.work"}


def test_reuse_inside_another_group_suffixes_under_that_group():
    def body():
        with TaskGroup("outer"):
            for _ in range(3):
                process()
        process()

    d = build(body)
    outer = d.task_group.children["outer"]
    assert group_ids(outer) == ["outer.process", "outer.process__1", "outer.process__2"]
    assert group_ids(d.task_group) == ["outer", "process"]
    assert d.has_task("outer.process__2.start") and d.has_task("process.start")


def test_reused_groups_in_reused_groups_all_get_their_own_ids():
    @task_group
    def inner():
        work()

    @task_group
    def outer():
        inner()
        inner()

    d = build(lambda: [outer(), outer()])
    assert sorted(d.task_ids) == [
        "outer.inner.work", "outer.inner__1.work", "outer__1.inner.work", "outer__1.inner__1.work"]


def test_an_overridden_group_id_is_suffixed_when_reused():
    d = build(lambda: [process.override(group_id="custom")() for _ in range(2)])
    assert group_ids(d.task_group) == ["custom", "custom__1"]


def test_a_suffixed_id_continues_after_the_highest_suffix_in_use():
    def body():
        with TaskGroup("process__4"):
            work()
        process()
        process()

    d = build(body)
    assert group_ids(d.task_group) == ["process__4", "process", "process__5"]


def test_a_group_function_named_like_a_task_gets_a_suffix():
    @task_group
    def start():
        work()

    def body():
        EmptyOperator(task_id="start")
        start()

    d = build(body)
    assert group_ids(d.task_group) == ["start__1"]
    assert d.has_task("start__1.work")


def test_group_ids_of_one_dag_do_not_suffix_another():
    first, second = build(process), build(process)
    assert group_ids(first.task_group) == group_ids(second.task_group) == ["process"]


def test_a_file_calling_a_group_with_a_classic_operator_twice_loads(tmp_path):
    path = tmp_path / "reuse.py"
    path.write_text(
        "from datetime import datetime\n"
        "from airflow.decorators import dag, task_group\n"
        "from airflow.operators.empty import EmptyOperator\n"
        "@task_group\n"
        "def process():\n    EmptyOperator(task_id='start') >> EmptyOperator(task_id='end')\n"
        "@dag(start_date=datetime(2026, 1, 1), schedule=None)\n"
        "def reuse():\n    process() >> process()\n"
        "reuse()\n")
    result = load_file(path, tmp_path)
    assert result.error is None
    (loaded,) = result.dags
    assert sorted(loaded.task_ids) == ["process.end", "process.start",
                                       "process__1.end", "process__1.start"]
    assert loaded.get_task("process__1.start").upstream_task_ids == {"process.end"}
    groups = {t["task_id"]: t["group_id"] for t in serialize_dag(loaded)["tasks"]}
    assert groups["process__1.end"] == "process__1"


# --- plain TaskGroup with a taken id ----------------------------------------------------------

def test_a_second_plain_group_with_the_same_id_is_refused():
    with pytest.raises(DuplicateTaskIdFound) as info:
        with DAG("d", start_date=datetime(2026, 1, 1)):
            with TaskGroup("g"):
                EmptyOperator(task_id="a")
            with TaskGroup("g"):
                EmptyOperator(task_id="b")
    assert str(info.value) == "group_id 'g' has already been added to the DAG"


def test_a_plain_group_named_like_a_task_is_refused():
    with pytest.raises(DuplicateTaskIdFound, match="group_id 'a' has already been added"):
        with DAG("d", start_date=datetime(2026, 1, 1)):
            EmptyOperator(task_id="a")
            TaskGroup("a")


def test_a_refused_group_names_its_label_when_nested():
    with pytest.raises(DuplicateTaskIdFound) as info:
        with DAG("d", start_date=datetime(2026, 1, 1)):
            with TaskGroup("outer"):
                TaskGroup("g")
                TaskGroup("g")
    assert str(info.value) == "group_id 'g' has already been added to the DAG"


def test_the_same_label_under_different_parents_is_two_groups():
    with DAG("d", start_date=datetime(2026, 1, 1)) as d:
        for outer in ("a", "b"):
            with TaskGroup(outer), TaskGroup("g"):
                EmptyOperator(task_id="t")
    assert sorted(d.task_ids) == ["a.g.t", "b.g.t"]


def test_a_plain_group_may_opt_in_to_suffixes():
    with DAG("d", start_date=datetime(2026, 1, 1)) as d:
        for _ in range(2):
            with TaskGroup("g", add_suffix_on_collision=True):
                EmptyOperator(task_id="t")
    assert sorted(d.task_ids) == ["g.t", "g__1.t"]


def test_a_file_with_two_plain_groups_of_one_id_fails_to_load(tmp_path):
    path = tmp_path / "twice.py"
    path.write_text(
        "from datetime import datetime\n"
        "from airflow import DAG\n"
        "from airflow.utils.task_group import TaskGroup\n"
        "from airflow.operators.empty import EmptyOperator\n"
        "with DAG('twice', start_date=datetime(2026, 1, 1), schedule=None):\n"
        "    with TaskGroup('g'):\n        EmptyOperator(task_id='a')\n"
        "    with TaskGroup('g'):\n        EmptyOperator(task_id='b')\n")
    result = load_file(path, tmp_path)
    assert result.dags == []
    assert "DuplicateTaskIdFound" in result.error
    assert "group_id 'g' has already been added to the DAG" in result.error


# --- mapped groups ----------------------------------------------------------------------------

def test_a_mapped_group_expanded_twice_is_two_mapped_groups():
    d = build(lambda: [mapped.expand(x=[1, 2]), mapped.expand(x=make())])
    assert group_ids(d.task_group) == ["mapped", "mapped__1"]
    assert all(isinstance(d.task_group.children[g], MappedTaskGroup) for g in ("mapped", "mapped__1"))
    assert isinstance(d.get_task("mapped__1.work"), MappedOperator)
    tasks = {t["task_id"]: t for t in serialize_dag(d)["tasks"]}
    assert tasks["mapped.work"]["mapped_group"] == "mapped"
    assert tasks["mapped__1.work"]["mapped_group"] == "mapped__1"
    assert tasks["mapped__1.work"]["mapped"]["group"] == "mapped__1"
    assert tasks["mapped__1.work"]["upstream"] == ["make"]
    assert tasks["mapped.work"]["upstream"] == []
    DagSpec.model_validate(serialize_dag(d))


def test_a_group_function_called_and_expanded_gets_one_id_each():
    d = build(lambda: [mapped(1), mapped.expand(x=[1, 2])])
    assert not d.task_group.children["mapped"].is_mapped
    assert d.task_group.children["mapped__1"].is_mapped
    assert isinstance(d.get_task("mapped__1.work"), MappedOperator)
    assert not isinstance(d.get_task("mapped.work"), MappedOperator)


def test_a_task_named_like_a_group_is_refused_not_put_in_the_groups_place():
    with DAG("clash", start_date=datetime(2026, 1, 1)):
        with TaskGroup("g"):
            EmptyOperator(task_id="inside")
        with pytest.raises(DuplicateTaskIdFound, match="Task id 'g' has already been added"):
            EmptyOperator(task_id="g")
