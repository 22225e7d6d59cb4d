"""``XComArg.map``, ``.zip`` and ``.concat`` as the scheduler sees them: a tree of references.

The values are computed by the Task SDK in the consuming task; the scheduler
only needs each mapped input's length, which it computes from the tree the
spec carries and the producers' task-map rows: ``map`` keeps the length,
``zip`` is the shortest (the longest with a ``fillvalue``, even ``None``),
``concat`` adds them.
"""

from __future__ import annotations

from collections import Counter

import pytest
from airflow.sdk import task

from scheduler.expansion import RunFacts, mapped_producers, run_length
from tests.unit.conftest import show, spec_of


@task
def letters():
    return ["a", "b", "c"]


@task
def numbers():
    return [1, 2, 3, 4]


def plain(task_id: str) -> dict:
    return {"op": "plain", "task_id": task_id, "key": "return_value"}


def lengths(spec, task_id: str, **task_map: int) -> int | None:
    done = {t: Counter(success=1) for t in task_map}
    return run_length(spec.task(task_id), spec, RunFacts(task_map=task_map), done)


def test_chained_maps_are_one_map_over_the_producer(in_dag):
    a = letters()
    first = a.map(lambda x: x * 2)
    show.expand(a=first.map(str.upper).map(lambda x: f"<{x}>"))
    show.expand(a=first)
    spec = spec_of(in_dag)
    assert spec.task("show").mapped["inputs"] == [
        {"key": "a", "xcom": {"op": "map", "arg": plain("letters")}}]
    assert spec.task("show").upstream == ["letters"]
    assert lengths(spec, "show", letters=3) == lengths(spec, "show__1", letters=3) == 3
    assert mapped_producers(spec.task("show").mapped) == {"letters"}


@pytest.mark.parametrize("fill", [None, 0, "-"])
def test_zip_with_a_fillvalue_even_none_is_as_long_as_the_longest(in_dag, fill):
    show.expand(a=letters().zip(numbers(), fillvalue=fill))
    spec = spec_of(in_dag)
    assert spec.task("show").mapped["inputs"][0]["xcom"] == {
        "op": "zip", "args": [plain("letters"), plain("numbers")], "longest": True}
    assert lengths(spec, "show", letters=3, numbers=4) == 4


def test_zip_is_as_long_as_the_shortest_and_of_three_too(in_dag):
    a, b = letters(), numbers()
    show.expand(a=a.zip(b))
    show.expand(a=a.zip(b, numbers.override(task_id="more")()))
    spec = spec_of(in_dag)
    assert spec.task("show").mapped["inputs"][0]["xcom"]["longest"] is False
    assert lengths(spec, "show", letters=3, numbers=4) == 3
    assert lengths(spec, "show__1", letters=3, numbers=4, more=2) == 2
    assert lengths(spec, "show__1", letters=3, numbers=4, more=0) == 0
    assert spec.task("show__1").upstream == ["letters", "more", "numbers"]


def test_concat_adds_lengths_and_chained_concats_are_flattened(in_dag):
    a, b = letters(), numbers()
    show.expand(a=a.concat(b).concat(a, b))
    spec = spec_of(in_dag)
    assert spec.task("show").mapped["inputs"][0]["xcom"] == {
        "op": "concat", "args": [plain("letters"), plain("numbers")] * 2}
    assert lengths(spec, "show", letters=3, numbers=2) == 10
    assert lengths(spec, "show", letters=0, numbers=0) == 0


# --- refused at load, by the Task SDK ---------------------------------------------------------

def test_non_return_xcoms_are_refused_when_the_reference_is_built_or_expanded(in_dag):
    a, b = letters(), numbers()
    for call, message in ((lambda: a["k"].map(str), "cannot map against non-return XCom"),
                          (lambda: a["k"].zip(b), "cannot map against non-return XCom"),
                          (lambda: a["k"].concat(b), "cannot concatenate non-return XCom")):
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == message
    for derived in (a.zip(b["k"]), a.concat(b["k"])):  # built, then refused by expand()
        with pytest.raises(ValueError) as info:
            show.expand(a=derived)
        assert str(info.value) == ("cannot map over XCom with custom key 'k' from "
                                   "<Task(_PythonDecoratedOperator): numbers>")


def test_a_literal_zipped_or_concatenated_fails_when_expanded(in_dag):
    """Airflow 3.3 builds ``a.zip([1, 2])`` and fails on it in ``expand()``."""
    a = letters()
    for derived in (a.zip([1, 2]), a.concat([1, 2])):
        with pytest.raises(AttributeError) as info:
            show.expand(a=derived)
        assert str(info.value) == "'list' object has no attribute 'iter_references'"
