"""Group ids as Airflow 3.3's Task SDK gives them, as the scheduler's spec carries them.

A reused ``@task_group`` function gets ``g``, ``g__1``, ``g__2``...; a second
plain ``TaskGroup`` with a taken id is refused; each task's ``group_id`` and
``mapped_group`` in the ``DagSpec`` follow the ids Airflow chose.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, TaskGroup, dag, task, task_group
from airflow.sdk.exceptions import DuplicateTaskIdFound

from shared.airflow_spec import parse
from shared.serialization import DagSpec
from tests.unit.conftest import spec_of


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
    @dag(dag_id="d", start_date=datetime(2026, 1, 1), schedule=None)
    def flow():
        body()

    return flow()


def groups(d: DAG) -> dict[str, str | None]:
    """Each task's group in the scheduler's spec."""
    return {t.task_id: t.group_id for t in spec_of(d).tasks}


def upstream(d: DAG) -> dict[str, list[str]]:
    return {t.task_id: t.upstream for t in spec_of(d).tasks}


# --- @task_group called more than once --------------------------------------------------------

def test_each_call_of_a_group_function_gets_the_next_suffix():
    d = build(lambda: [process() for _ in range(3)])
    assert groups(d) == {f"{g}.{t}": g for g in ("process", "process__1", "process__2")
                         for t in ("start", "work")}


def test_each_reused_group_keeps_its_own_edges():
    def body():
        first, second = process(), process()
        first >> second

    assert upstream(build(body)) == {
        "process.start": [], "process.work": ["process.start"],
        "process__1.start": ["process.work"], "process__1.work": ["process__1.start"]}


def test_a_returned_task_is_forwarded_from_every_call():
    @task_group
    def step(x):
        return work(x)

    assert upstream(build(lambda: work(step(step(1))))) == {
        "step.work": [], "step__1.work": ["step.work"], "work": ["step__1.work"]}


def test_reuse_inside_another_group_is_refused_by_airflow():
    """Airflow 3.3 suffixes a reused group inside another group with an id it already gave."""
    def body():
        with TaskGroup("outer"):
            for _ in range(3):
                process()

    with pytest.raises(DuplicateTaskIdFound) as info:
        build(body)
    assert str(info.value) == "Task Group id 'outer.process__1' has already been added to the Dag"


def test_reused_groups_in_reused_groups_all_get_their_own_ids():
    @task_group
    def inner():
        work()

    @task_group
    def outer():
        inner()
        inner()

    assert groups(build(lambda: [outer(), outer()])) == {
        "outer.inner.work": "outer.inner", "outer.inner__1.work": "outer.inner__1",
        "outer__1.inner.work": "outer__1.inner", "outer__1.inner__1.work": "outer__1.inner__1"}


def test_an_overridden_group_id_is_suffixed_when_reused():
    d = build(lambda: [process.override(group_id="custom")() for _ in range(2)])
    assert set(groups(d).values()) == {"custom", "custom__1"}


def test_a_suffixed_id_continues_after_the_highest_suffix_in_use():
    def body():
        with TaskGroup("process__4"):
            work()
        process()
        process()

    assert set(groups(build(body)).values()) == {"process__4", "process", "process__5"}


def test_a_group_function_named_like_a_task_gets_a_suffix():
    @task_group
    def start():
        work()

    def body():
        EmptyOperator(task_id="start")
        start()

    assert groups(build(body)) == {"start": None, "start__1.work": "start__1"}


def test_group_ids_of_one_dag_do_not_suffix_another():
    first, second = build(process), build(process)
    assert groups(first) == groups(second) == {"process.start": "process", "process.work": "process"}


def test_a_file_calling_a_group_twice_loads(tmp_path: Path, isolated_dag_modules):
    path = tmp_path / "reuse.py"
    path.write_text(
        "from datetime import datetime\n"
        "from airflow.sdk import dag, task_group\n"
        "from airflow.providers.standard.operators.empty import EmptyOperator\n"
        "@task_group\n"
        "def process():\n    EmptyOperator(task_id='start') >> EmptyOperator(task_id='end')\n"
        "@dag(start_date=datetime(2026, 1, 1), schedule=None)\n"
        "def reuse():\n    process() >> process()\n"
        "reuse()\n")
    (result,) = parse(path, tmp_path)
    assert result["error"] is None
    (loaded,) = result["dags"]
    spec = DagSpec.model_validate(loaded)
    assert {t.task_id: (t.group_id, t.upstream) for t in spec.tasks} == {
        "process.start": ("process", []), "process.end": ("process", ["process.start"]),
        "process__1.start": ("process__1", ["process.end"]),
        "process__1.end": ("process__1", ["process__1.start"])}


# --- plain TaskGroup with a taken id ----------------------------------------------------------

def test_a_second_plain_group_with_the_same_id_is_refused():
    with pytest.raises(DuplicateTaskIdFound) as info:
        with DAG("d", schedule=None):
            with TaskGroup("g"):
                EmptyOperator(task_id="a")
            with TaskGroup("g"):
                EmptyOperator(task_id="b")
    assert str(info.value) == "group_id 'g' has already been added to the DAG"


def test_a_plain_group_named_like_a_task_is_refused():
    with pytest.raises(DuplicateTaskIdFound) as info:
        with DAG("d", schedule=None):
            EmptyOperator(task_id="a")
            TaskGroup("a")
    assert str(info.value) == "group_id 'a' has already been added to the DAG"


def test_a_refused_group_names_its_label_when_nested():
    with pytest.raises(DuplicateTaskIdFound) as info:
        with DAG("d", schedule=None):
            with TaskGroup("outer"):
                TaskGroup("g")
                TaskGroup("g")
    assert str(info.value) == "group_id 'g' has already been added to the DAG"


def test_a_task_named_like_a_group_is_refused_not_put_in_the_groups_place():
    with DAG("clash", schedule=None):
        with TaskGroup("g"):
            EmptyOperator(task_id="inside")
        with pytest.raises(DuplicateTaskIdFound) as info:
            EmptyOperator(task_id="g")
    assert str(info.value) == "Task id 'g' has already been added to the Dag"


def test_the_same_label_under_different_parents_is_two_groups():
    with DAG("d", schedule=None) as d:
        for outer in ("a", "b"):
            with TaskGroup(outer), TaskGroup("g"):
                EmptyOperator(task_id="t")
    assert groups(d) == {"a.g.t": "a.g", "b.g.t": "b.g"}


def test_a_plain_group_may_opt_in_to_suffixes():
    with DAG("d", schedule=None) as d:
        for _ in range(2):
            with TaskGroup("g", add_suffix_on_collision=True):
                EmptyOperator(task_id="t")
    assert groups(d) == {"g.t": "g", "g__1.t": "g__1"}


def test_a_file_with_two_plain_groups_of_one_id_fails_to_load(tmp_path: Path, isolated_dag_modules):
    path = tmp_path / "twice.py"
    path.write_text(
        "from datetime import datetime\n"
        "from airflow.sdk import DAG, TaskGroup\n"
        "from airflow.providers.standard.operators.empty import EmptyOperator\n"
        "with DAG('twice', start_date=datetime(2026, 1, 1), schedule=None):\n"
        "    with TaskGroup('g'):\n        EmptyOperator(task_id='a')\n"
        "    with TaskGroup('g'):\n        EmptyOperator(task_id='b')\n")
    (result,) = parse(path, tmp_path)
    assert result["dags"] == []
    assert result["error"].endswith(
        "DuplicateTaskIdFound: group_id 'g' has already been added to the DAG\n")


# --- mapped groups ----------------------------------------------------------------------------

def test_a_mapped_group_expanded_twice_is_two_mapped_groups():
    spec = spec_of(build(lambda: [mapped.expand(x=[1, 2]), mapped.expand(x=make())]))
    tasks = {t.task_id: t for t in spec.tasks}
    assert (tasks["mapped.work"].mapped_group, tasks["mapped__1.work"].mapped_group) == (
        "mapped", "mapped__1")
    assert tasks["mapped.work"].mapped == {
        "kind": "dict_of_lists", "inputs": [{"key": "x", "length": 2}], "group": "mapped"}
    assert tasks["mapped__1.work"].mapped["group"] == "mapped__1"
    assert (tasks["mapped.work"].upstream, tasks["mapped__1.work"].upstream) == ([], ["make"])


def test_a_group_function_called_and_expanded_gets_one_id_each():
    spec = spec_of(build(lambda: [mapped(1), mapped.expand(x=[1, 2])]))
    assert {t.task_id: (t.mapped_group, t.mapped is not None) for t in spec.tasks} == {
        "mapped.work": (None, False), "mapped__1.work": ("mapped__1", True)}
