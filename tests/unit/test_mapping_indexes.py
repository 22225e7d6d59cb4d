"""Which values go to which map index: Airflow's index arithmetic, as pure code.

``expand`` kwargs form a cross product in the order written, the last one
varying fastest; a dict maps to ``(key, value)`` pairs in insertion order;
``expand_kwargs`` gives one instance per dict, checked when that instance
runs; ``partial`` merges ``default_args`` under its explicit values.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest

from shared.sdk import DAG, BashOperator, TaskGroup, dag, task
from shared.sdk.mapped import DictOfListsExpandInput, ListOfDictsExpandInput
from shared.serialization import DagSpec, serialize_dag
from tests.unit.conftest import Values, gen

START = datetime(2026, 1, 1)
CONTEXT = {"run_id": "r1", "params": {}}




@task
def show(a, b=None, c=None):
    return (a, b, c)



def resolved(expand, n: int, resolver=None) -> list[dict]:
    return [expand.resolve(i, resolver or Values())[0] for i in range(n)]


# --- cross product ------------------------------------------------------------------------------

def test_cross_product_last_kwarg_fastest():
    expand = DictOfListsExpandInput({"a": [2, 4, 8], "b": [5, 10]})
    got = [tuple(expand.resolve(i, Values())[0].values()) for i in range(6)]
    assert got == [(2, 5), (2, 10), (4, 5), (4, 10), (8, 5), (8, 10)]


def test_cross_product_of_three_kwargs_is_row_major_in_the_order_written():
    a, b, c = [1, 2], ["x", "y", "z"], [True, False]
    expand = DictOfListsExpandInput({"a": a, "b": b, "c": c})
    got = [tuple(v.values()) for v in resolved(expand, 12)]
    assert got == list(itertools.product(a, b, c))
    assert got[:4] == [(1, "x", True), (1, "x", False), (1, "y", True), (1, "y", False)]
    assert got[-1] == (2, "z", False)


def test_the_order_is_the_order_written_not_alphabetical():
    expand = DictOfListsExpandInput({"z": [1, 2], "a": [3, 4]})
    assert [tuple(v.items()) for v in resolved(expand, 4)] == [
        (("z", 1), ("a", 3)), (("z", 1), ("a", 4)), (("z", 2), ("a", 3)), (("z", 2), ("a", 4))]


def test_cross_product_with_an_upstream_input_in_the_middle(in_dag):
    expand = DictOfListsExpandInput({"a": [1, 2], "b": gen(), "c": ("p", "q")})
    values = Values(gen=["u", "v", "w"])
    got = [tuple(v.values()) for v in resolved(expand, 12, values)]
    assert got == list(itertools.product([1, 2], ["u", "v", "w"], ("p", "q")))
    assert expand.resolve(0, values)[1] == {"b"}  # which keys came from an upstream


def test_the_index_arithmetic_reaches_the_unmapped_operator(in_dag):
    out = show.expand(a=[2, 4, 8], b=[5, 10])
    got = [out.operator.unmap(i, Values(), CONTEXT).op_kwargs for i in range(6)]
    assert [(k["a"], k["b"]) for k in got] == [(2, 5), (2, 10), (4, 5), (4, 10), (8, 5), (8, 10)]
    classic = BashOperator.partial(task_id="b").expand(bash_command=["x", "y"], cwd=["/1", "/2"])
    assert [(o.bash_command, o.cwd) for o in (classic.unmap(i, Values(), CONTEXT) for i in range(4))] \
        == [("x", "/1"), ("x", "/2"), ("y", "/1"), ("y", "/2")]


# --- dicts ------------------------------------------------------------------------------------

def test_dicts_map_to_pairs_in_insertion_order():
    expand = DictOfListsExpandInput({"kv": {"z": 1, "a": 2}})
    assert [expand.resolve(i, Values())[0]["kv"] for i in range(2)] == [("z", 1), ("a", 2)]


def test_an_upstream_dict_maps_to_pairs_in_its_insertion_order(in_dag):
    expand = DictOfListsExpandInput({"kv": gen(), "n": [0, 1]})
    values = Values(gen={"zeta": 1, "alpha": 2, "mu": 3})
    assert [tuple(v.values()) for v in resolved(expand, 6, values)] == [
        (("zeta", 1), 0), (("zeta", 1), 1), (("alpha", 2), 0), (("alpha", 2), 1),
        (("mu", 3), 0), (("mu", 3), 1)]


def test_a_literal_dict_in_a_cross_product_counts_its_keys(in_dag):
    out = show.expand(a={"k1": "v1", "k2": "v2"}, b=[1, 2, 3])
    assert out.operator.serialize_mapping()["inputs"] == [{"key": "a", "length": 2},
                                                          {"key": "b", "length": 3}]
    assert out.operator.unmap(4, Values(), CONTEXT).op_kwargs == {"a": ("k2", "v2"), "b": 2}


# --- expand_kwargs ------------------------------------------------------------------------------

def test_expand_kwargs_checks_elements():
    bad = ListOfDictsExpandInput([1, 2])
    with pytest.raises(ValueError, match=r"expand_kwargs\(\) expects a list\[dict\], not list\[int\]"):
        bad.resolve(0, Values())
    keys = ListOfDictsExpandInput([{1: "x"}])
    with pytest.raises(ValueError, match="input dict keys must all be str, but 1 is of type int"):
        keys.resolve(0, Values())


def test_expand_kwargs_gives_each_instance_its_own_dict(in_dag):
    literal = ListOfDictsExpandInput([{"a": 1}, {"a": 2, "b": 3}, {}])
    assert resolved(literal, 3) == [{"a": 1}, {"a": 2, "b": 3}, {}]
    upstream = gen()
    whole = ListOfDictsExpandInput(upstream)
    assert resolved(whole, 2, Values(gen=[{"b": 1, "a": 2}, {"a": 3}])) == [{"b": 1, "a": 2}, {"a": 3}]
    assert list(whole.resolve(0, Values(gen=[{"b": 1, "a": 2}]))[0]) == ["b", "a"]
    element = ListOfDictsExpandInput([{"a": 1}, upstream])
    assert resolved(element, 2, Values(gen={"a": 9})) == [{"a": 1}, {"a": 9}]


def test_a_bad_element_fails_only_its_own_instance():
    seq = ListOfDictsExpandInput([{"a": 1}, 2, {3: "x"}, "s"])
    assert seq.resolve(0, Values())[0] == {"a": 1}
    with pytest.raises(ValueError) as info:
        seq.resolve(1, Values())
    assert str(info.value) == "expand_kwargs() expects a list[dict], not list[int]"
    with pytest.raises(ValueError) as info:
        seq.resolve(2, Values())
    assert str(info.value) == "expand_kwargs() input dict keys must all be str, but 3 is of type int"
    with pytest.raises(ValueError) as info:
        seq.resolve(3, Values())
    assert str(info.value) == "expand_kwargs() expects a list[dict], not list[str]"


def test_an_upstream_list_with_a_non_dict_element_fails_that_instance(in_dag):
    whole = ListOfDictsExpandInput(gen())
    values = Values(gen=[{"a": 1}, 7, {"b": 2}])
    assert whole.resolve(2, values)[0] == {"b": 2}
    with pytest.raises(ValueError) as info:
        whole.resolve(1, values)
    assert str(info.value) == "expand_kwargs() expects a list[dict], not list[int]"
    with pytest.raises(ValueError) as info:
        whole.resolve(0, Values(gen={"a": 1}))
    assert str(info.value) == "expand_kwargs() expects a list[dict], not list[tuple]"


def test_a_none_element_is_described_as_none(in_dag):
    with pytest.raises(ValueError) as info:
        ListOfDictsExpandInput(gen().map(lambda x: None)).resolve(0, Values(gen=[1]))
    assert str(info.value) == "expand_kwargs() expects a list[dict], not list[None]"


def test_strict_expand_kwargs_fails_the_instance_on_a_partial_clash(in_dag):
    flow = show.partial(b=1).expand_kwargs([{"a": 1}, {"a": 2, "b": 3}])
    assert flow.operator.unmap(0, Values(), CONTEXT).op_kwargs == {"b": 1, "a": 1}
    with pytest.raises(TypeError) as info:
        flow.operator.unmap(1, Values(), CONTEXT)
    assert str(info.value) == "mapping already partial argument: b"
    classic = BashOperator.partial(task_id="c", env={"A": "1"}).expand_kwargs(
        [{"bash_command": "x"}, {"bash_command": "y", "env": {}}])
    assert classic.unmap(0, Values(), CONTEXT).env == {"A": "1"}
    with pytest.raises(TypeError) as info:
        classic.unmap(1, Values(), CONTEXT)
    assert str(info.value) == "unmappable or already specified argument: env"


def test_non_strict_expand_kwargs_lets_the_mapped_value_win(in_dag):
    flow = show.partial(b=1).expand_kwargs([{"a": 2, "b": 3}], strict=False)
    assert flow.operator.unmap(0, Values(), CONTEXT).op_kwargs == {"b": 3, "a": 2}
    classic = BashOperator.partial(task_id="c", env={"A": "1"}).expand_kwargs(
        [{"bash_command": "y", "env": {"B": "2"}}], strict=False)
    assert classic.unmap(0, Values(), CONTEXT).env == {"B": "2"}


def test_several_strict_clashes_are_named_in_the_plural(in_dag):
    classic = BashOperator.partial(task_id="c", env={}, cwd="/").expand_kwargs(
        [{"bash_command": "y", "env": {}, "cwd": "/x"}])
    with pytest.raises(TypeError) as info:
        classic.unmap(0, Values(), CONTEXT)
    assert str(info.value) == "unmappable or already specified arguments: cwd, env"
    flow = show.partial(a=1, b=1).expand_kwargs([{"a": 2, "b": 3}])
    with pytest.raises(TypeError) as info:
        flow.operator.unmap(0, Values(), CONTEXT)
    assert str(info.value) == "mapping already partial arguments: a, b"


def test_several_taskflow_clashes_at_load_are_all_named(in_dag):
    with pytest.raises(TypeError) as info:
        show.partial(a=1, b=2).expand(b=[1], a=[2])
    assert str(info.value) == "mapping already partial arguments: a, b"
    with pytest.raises(TypeError) as info:
        show.partial(a=1, b=2).partial(b=1, a=2)
    assert str(info.value) == "duplicate partial arguments: a, b"


# --- partial() and default_args ---------------------------------------------------------------

def test_partial_merges_dag_and_group_default_args_under_explicit_values():
    defaults = {"retries": 2, "queue": "dq", "retry_delay": timedelta(seconds=7), "pool": "dp"}
    with DAG("d", start_date=START, default_args=defaults):
        explicit = BashOperator.partial(task_id="explicit", retries=1).expand(bash_command=["x"])
        inherited = BashOperator.partial(task_id="inherited").expand(bash_command=["x"])
        with TaskGroup("tg", default_args={"retries": 3, "pool": "gp"}):
            grouped = BashOperator.partial(task_id="grouped").expand(bash_command=["x"])
            zero = BashOperator.partial(task_id="zero", retries=0).expand(bash_command=["x"])
            flow = show.override(retries=5).expand(a=[1])
            flow_inherited = show.expand(a=[1])
    assert (explicit.retries, explicit.queue, explicit.pool) == (1, "dq", "dp")
    assert (inherited.retries, inherited.retry_delay) == (2, timedelta(seconds=7))
    assert (grouped.retries, grouped.queue, grouped.pool) == (3, "dq", "gp")
    assert zero.retries == 0
    assert (flow.operator.retries, flow_inherited.operator.retries) == (5, 3)
    assert (flow_inherited.operator.pool, flow_inherited.operator.queue) == ("gp", "dq")
    real = grouped.unmap(0, Values(), CONTEXT)
    assert (real.retries, real.queue, real.pool, real.task_id) == (3, "dq", "gp", "tg.grouped")


def test_the_merged_defaults_are_what_the_scheduler_sees():
    @dag(dag_id="d", start_date=START, default_args={"retries": 2, "queue": "dq"})
    def flow():
        BashOperator.partial(task_id="a", retries=1).expand(bash_command=["x"])
        BashOperator.partial(task_id="b").expand(bash_command=gen())

    spec = DagSpec.model_validate(serialize_dag(flow()))
    assert [(spec.task(t).retries, spec.task(t).queue) for t in ("a", "b")] == [(1, "dq"), (2, "dq")]


def test_mapped_params_reach_the_instance(in_dag):
    op = BashOperator.partial(task_id="p").expand(bash_command=["x", "y"], params=[{"b": 3}])
    assert [op.unmap(i, Values(), CONTEXT).params for i in range(2)] == [{"b": 3}, {"b": 3}]


def test_mapped_params_merge_over_partial_params(in_dag):
    op = BashOperator.partial(task_id="p", params={"a": 1, "b": 2}).expand(
        bash_command=["x"], params=[{"b": 3, "c": 4}])
    assert op.unmap(0, Values(), CONTEXT).params == {"a": 1, "b": 3, "c": 4}


def test_strict_expand_kwargs_merges_params_instead_of_clashing(in_dag):
    op = BashOperator.partial(task_id="p", params={"a": 1, "b": 2}).expand_kwargs(
        [{"bash_command": "x", "params": {"b": 3}}])
    assert op.unmap(0, Values(), CONTEXT).params == {"a": 1, "b": 3}
