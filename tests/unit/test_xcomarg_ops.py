"""``XComArg.map``, ``.zip`` and ``.concat``: lazy, per element, in the consuming worker.

The derived sequences are pure code over plain sequences; one test runs a
mapped instance through the worker's task runner (``worker/runner.py``) with
a fake of its RPC boundary (the ``call``s it makes to its worker) to show a
skip raised by ``.map`` skips just that instance.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shared.sdk import AirflowSkipException, task
from shared.sdk.xcom_arg import (
    NOTSET,
    ConcatResult,
    ConcatXComArg,
    MapResult,
    MapXComArg,
    ZipResult,
    as_sequence,
)
from tests.unit.conftest import Values
from worker.runner import TaskRunner


@task
def letters():
    return ["a", "b", "c"]


@task
def numbers():
    return [1, 2, 3, 4]


# --- moved from test_mapping.py --------------------------------------------------------------

def test_map_zip_concat_are_lazy_and_consistent_over_dicts():
    seen = []
    mapped = MapResult([1, 2, 3], [lambda x: seen.append(x) or x * 2])
    assert len(mapped) == 3 and seen == []
    assert mapped[-1] == 6 and seen == [3]
    assert list(ZipResult([[1, 2, 3], ["a", "b"]], fillvalue=None)) == [(1, "a"), (2, "b"), (3, None)]
    assert len(ZipResult([[1, 2, 3], ["a", "b"]], fillvalue=object())) == 3
    assert list(ZipResult([[1, 2, 3], ["a", "b"]], NOTSET)) == [(1, "a"), (2, "b")]
    assert list(ConcatResult([["a", "b", "c"], as_sequence({"k": 1}, "concat")])) == ["a", "b", "c", ("k", 1)]


def test_map_skip_raises_from_the_element():
    def skip_c(x):
        if x == "c":
            raise AirflowSkipException("no c")
        return x.upper()

    result = MapResult(["a", "c"], [skip_c])
    assert result[0] == "A"
    with pytest.raises(AirflowSkipException):
        result[1]


# --- .map ------------------------------------------------------------------------------------

def test_map_is_lazy_and_computes_only_the_element_asked_for(in_dag):
    calls = []

    def upper(x):
        calls.append(x)
        return x.upper()

    seq = letters().map(upper).resolve(Values(letters=["a", "b", "c"]))
    assert len(seq) == 3 and calls == []
    assert seq[1] == "B" and calls == ["b"]
    assert seq[-1] == "C" and calls == ["b", "c"]
    assert seq[0:2] == ["A", "B"] and calls == ["b", "c", "a", "b"]


def test_chained_maps_compose_in_order_without_changing_the_first(in_dag):
    first = letters().map(lambda x: x * 2)
    chained = first.map(str.upper).map(lambda x: f"<{x}>")
    assert isinstance(chained, MapXComArg) and chained.arg is first.arg
    assert len(first.callables) == 1 and len(chained.callables) == 3
    assert list(chained.resolve(Values(letters=["a", "b"]))) == ["<AA>", "<BB>"]
    assert list(first.resolve(Values(letters=["a", "b"]))) == ["aa", "bb"]
    assert chained.to_json() == {"op": "map", "arg": {"op": "plain", "task_id": "letters",
                                                      "key": "return_value"}}


def test_map_returning_none_passes_none_without_filtering():
    seq = MapResult(["a", "b", "c"], [lambda x: None if x == "b" else x])
    assert len(seq) == 3 and list(seq) == ["a", None, "c"]


def test_map_raising_another_error_propagates_it():
    def boom(x):
        raise ZeroDivisionError(f"bad {x}")

    seq = MapResult([1], [boom])
    assert len(seq) == 1
    with pytest.raises(ZeroDivisionError, match="bad 1"):
        seq[0]


# --- .zip ------------------------------------------------------------------------------------

def test_zip_is_as_long_as_the_shortest(in_dag):
    zipped = letters().zip(numbers())
    seq = zipped.resolve(Values(letters=["a", "b", "c"], numbers=[1, 2, 3, 4]))
    assert len(seq) == 3 and list(seq) == [("a", 1), ("b", 2), ("c", 3)]
    assert zipped.to_json()["longest"] is False


@pytest.mark.parametrize("fill", [None, 0, "-"])
def test_zip_with_a_fillvalue_even_none_is_as_long_as_the_longest(in_dag, fill):
    zipped = letters().zip(numbers(), fillvalue=fill)
    seq = zipped.resolve(Values(letters=["a", "b", "c"], numbers=[1, 2, 3, 4]))
    assert len(seq) == 4 and list(seq) == [("a", 1), ("b", 2), ("c", 3), (fill, 4)]
    assert zipped.to_json()["longest"] is True


def test_zip_of_three_and_of_an_empty_one():
    assert list(ZipResult([[1, 2], [3, 4], [5, 6, 7]], NOTSET)) == [(1, 3, 5), (2, 4, 6)]
    assert len(ZipResult([[1, 2], []], NOTSET)) == 0
    assert list(ZipResult([[1, 2], []], "x")) == [(1, "x"), (2, "x")]


# --- .concat ---------------------------------------------------------------------------------

def test_concat_adds_lengths_and_walks_inputs_in_order(in_dag):
    joined = letters().concat(numbers())
    seq = joined.resolve(Values(letters=["a", "b", "c"], numbers=[1, 2]))
    assert len(seq) == 5 and list(seq) == ["a", "b", "c", 1, 2]
    assert (seq[-1], seq[-5], seq[3:], seq[::-2]) == (2, "a", [1, 2], [2, "c", "a"])
    with pytest.raises(IndexError, match="list index out of range"):
        seq[5]
    with pytest.raises(IndexError, match="list index out of range"):
        seq[-6]


def test_chained_concats_are_flattened(in_dag):
    a, b = letters(), numbers()
    joined = a.concat(b).concat(a, b)
    assert isinstance(joined, ConcatXComArg) and len(joined.args) == 4
    assert len(joined.resolve(Values(letters=["x"], numbers=[1, 2]))) == 6


# --- over dict outputs: (key, value) pairs, consistently ----------------------------------------

DICT = {"zeta": 1, "alpha": 2}  # insertion order, not sorted


@pytest.mark.parametrize("path", ["resolve", "resolve_sequence"])
def test_dict_outputs_are_key_value_pairs_in_every_op(in_dag, path):
    d, n = letters(), numbers()
    values = Values(letters=DICT, numbers=[10, 20, 30])

    def run(arg):
        return list(getattr(arg, path)(values))

    assert run(d.map(lambda kv: kv)) == [("zeta", 1), ("alpha", 2)]
    assert run(d.map(lambda kv: f"{kv[0]}={kv[1]}")) == ["zeta=1", "alpha=2"]
    assert run(d.zip(n)) == [(("zeta", 1), 10), (("alpha", 2), 20)]
    assert run(n.zip(d, fillvalue=None)) == [(10, ("zeta", 1)), (20, ("alpha", 2)), (30, None)]
    assert run(d.concat(n)) == [("zeta", 1), ("alpha", 2), 10, 20, 30]
    assert run(n.concat(d)) == [10, 20, 30, ("zeta", 1), ("alpha", 2)]


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value,shown", [(3, "int"), ("abc", "str"), (None, "NoneType")])
def test_an_upstream_value_that_is_not_a_sequence_or_dict_is_refused(in_dag, value, shown):
    a, b = letters(), numbers()
    values = Values(letters=value, numbers=[1])
    for arg, what in ((a.map(str), "map"), (a.zip(b), "zip"), (a.concat(b), "concat")):
        with pytest.raises(ValueError) as info:
            arg.resolve(values)
        assert str(info.value) == f"XCom {what} expects sequence or dict, not {shown}"


def test_non_return_xcoms_and_literals_are_refused_at_load(in_dag):
    a, b = letters(), numbers()
    for call, message in ((lambda: a["k"].map(str), "cannot map against non-return XCom"),
                          (lambda: a["k"].zip(b), "cannot map against non-return XCom"),
                          (lambda: a.zip(b["k"]), "cannot map against non-return XCom"),
                          (lambda: a.concat(b["k"]), "cannot concatenate non-return XCom")):
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == message
    for call in (lambda: a.zip([1, 2]), lambda: a.concat([1, 2])):
        with pytest.raises(TypeError) as info:
            call()
        assert str(info.value) == "expected XComArg, not list"


# --- a skip raised by .map skips just that instance (worker/runner.py) -------------------------

DAG_FILE = '''
from datetime import datetime
from shared.sdk import AirflowSkipException, dag, task

@task
def letters():
    return ["a", "b", "c"]

def pick(x):
    if x == "b":
        raise AirflowSkipException("no b")
    if x == "c":
        raise KeyError("no c")
    return x.upper()

@task
def use(x):
    return x

@dag(dag_id="ops", start_date=datetime(2026, 1, 1))
def ops():
    use.expand(x=letters().map(pick))

ops()
'''


class FakeWorker:
    """The worker's side of the runner's RPC: upstream ``letters`` returned ['a', 'b', 'c']."""

    def __init__(self):
        self.calls = []

    def send(self, message):
        pass

    def call(self, method, **args):
        self.calls.append(method)
        if method == "task_map_length":
            return 3
        if method == "xcom_item":
            return json.dumps({"value": ["a", "b", "c"][args["index"]]})
        raise AssertionError(f"unexpected call {method}")


def run_instance(folder: Path, map_index: int) -> tuple[dict, list[str]]:
    worker = FakeWorker()
    runner = TaskRunner(folder, worker, max_xcom_bytes=1 << 20)
    try:
        result = runner.run({"fileloc": str(folder / "ops.py"), "dag_id": "ops", "task_id": "use",
                             "map_index": map_index, "try_number": 1, "max_tries": 0,
                             "run_id": "r1", "run_type": "manual",
                             "logical_date": "2026-01-01T00:00:00+00:00"})
    finally:
        os.close(runner.stderr_fd)
    return result, worker.calls


def test_a_skip_from_map_skips_that_instance_and_another_exception_fails_it(tmp_path):
    (tmp_path / "ops.py").write_text(DAG_FILE)
    ok, calls = run_instance(tmp_path, 0)
    assert (ok["outcome"], ok["xcoms"]) == ("success", [["return_value", '"A"']])
    assert calls == ["task_map_length", "xcom_item"]  # one element fetched, not the list
    skipped, _ = run_instance(tmp_path, 1)
    assert skipped["outcome"] == "skipped"
    failed, _ = run_instance(tmp_path, 2)
    assert (failed["outcome"], failed["error"]) == ("retry", "KeyError: 'no c'")


def test_a_runner_asks_an_upstream_length_once_per_run_until_the_run_is_cleared(tmp_path):
    """The length is fixed once the producer succeeded; only a clear (a new producer try) moves it."""
    (tmp_path / "ops.py").write_text(DAG_FILE)
    worker = FakeWorker()
    runner = TaskRunner(tmp_path, worker, max_xcom_bytes=1 << 20)

    def run(map_index: int, run_pk: int = 7, clear_number: int = 0) -> dict:
        return runner.run({"fileloc": str(tmp_path / "ops.py"), "dag_id": "ops", "task_id": "use",
                           "map_index": map_index, "try_number": 1, "max_tries": 0,
                           "run_pk": run_pk, "clear_number": clear_number, "run_id": "r1",
                           "run_type": "manual", "logical_date": "2026-01-01T00:00:00+00:00"})

    try:
        assert run(0)["outcome"] == "success" and run(1)["outcome"] == "skipped"
        assert worker.calls == ["task_map_length", "xcom_item", "xcom_item"]
        worker.calls.clear()
        run(0, clear_number=1)  # the run was cleared: the producer may have returned another list
        run(0, run_pk=8)  # another run
        assert worker.calls == ["task_map_length", "xcom_item"] * 2
    finally:
        os.close(runner.stderr_fd)
