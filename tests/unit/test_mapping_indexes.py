"""Which values go to which map index, where the scheduler needs to know.

Which values an instance receives is the Task SDK's (``expand`` kwargs form a
cross product in the order written, the last varying fastest; a dict maps to
``(key, value)`` pairs). The scheduler computes the same positions itself
for ``start_from_trigger`` values, with no user code run: those must agree
with the SDK's own resolution of each index. Lengths and ``default_args``
merged into ``partial`` reach the scheduler through the ``DagSpec``.
"""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, BaseOperator, TaskGroup
from airflow.triggers.base import StartTriggerArgs

from scheduler.start_trigger import start_args
from tests.unit.conftest import gen, show, spec_of


class Wait(BaseOperator):
    """An operator that may start in the triggerer, with one more argument to map."""

    start_trigger_args = StartTriggerArgs(
        trigger_cls="airflow.providers.standard.triggers.temporal.TimeDeltaTrigger",
        next_method="execute_complete", trigger_kwargs={"delta": timedelta(seconds=1)})
    start_from_trigger = False

    def __init__(self, *, start_from_trigger=False, trigger_kwargs=None, x=None, **kwargs):
        super().__init__(**kwargs)
        self.start_from_trigger = start_from_trigger
        self.x = x


def sdk_values(mapped, map_index: int) -> dict:
    """The kwargs the Task SDK gives instance ``map_index`` of a literal mapping."""
    context = {"ti": SimpleNamespace(map_index=map_index)}
    return dict(mapped._get_specified_expand_input().resolve(context)[0])


def agree(mapped, spec, n: int) -> list:
    """Per index: the scheduler's start values next to the SDK's, asserted equal."""
    seen = []
    for i in range(n):
        sdk = sdk_values(mapped, i)
        sluice = start_args(spec.task(mapped.task_id), i)
        if sdk.get("start_from_trigger"):
            assert sluice is not None, i
            assert sluice.trigger_kwargs == sdk["trigger_kwargs"], i
        else:
            assert sluice is None, i
        seen.append((sdk.get("start_from_trigger"), sdk.get("x"), sdk["trigger_kwargs"]))
    return seen


def test_the_scheduler_reads_start_values_in_the_sdks_cross_product_order(in_dag):
    mapped = Wait.partial(task_id="wait").expand(
        start_from_trigger=[True, False], x=["p", "q", "r"], trigger_kwargs=[{"n": 1}, {"n": 2}])
    seen = agree(mapped, spec_of(in_dag), 12)
    assert seen[:4] == [(True, "p", {"n": 1}), (True, "p", {"n": 2}), (True, "q", {"n": 1}),
                        (True, "q", {"n": 2})]  # row-major, the last kwarg fastest
    assert seen[-1] == (False, "r", {"n": 2})


def test_the_order_is_the_order_written_not_alphabetical(in_dag):
    mapped = Wait.partial(task_id="wait").expand(
        x=["p", "q"], trigger_kwargs=[{"n": 1}, {"n": 2}, {"n": 3}], start_from_trigger=[False, True])
    seen = agree(mapped, spec_of(in_dag), 12)
    assert [s[0] for s in seen[:4]] == [False, True, False, True]


def test_expand_kwargs_gives_each_index_its_own_dict(in_dag):
    mapped = Wait.partial(task_id="wait", trigger_kwargs={"n": 0}).expand_kwargs(
        [{"start_from_trigger": True}, {"x": 1}, {"start_from_trigger": True, "trigger_kwargs": {"n": 2}}],
        strict=False)
    spec = spec_of(in_dag)
    assert [start_args(spec.task("wait"), i) is not None for i in range(3)] == [True, False, True]
    assert [sdk_values(mapped, i).get("start_from_trigger") for i in range(3)] == [True, None, True]
    assert start_args(spec.task("wait"), 2).trigger_kwargs == {"n": 2}
    assert start_args(spec.task("wait"), 0).trigger_kwargs == {"n": 0}  # partial's, under it


# --- lengths ------------------------------------------------------------------------------------

def test_a_literal_dict_in_a_cross_product_counts_its_keys(in_dag):
    mapped = show.expand(a={"k1": "v1", "k2": "v2"}, b=[1, 2, 3]).operator
    assert spec_of(in_dag).task("show").mapped["inputs"] == [{"key": "a", "length": 2},
                                                            {"key": "b", "length": 3}]
    op_kwargs = sdk_values(mapped, 4)  # the SDK's instance 4: second key, second value
    assert op_kwargs == {"a": ("k2", "v2"), "b": 2}


# --- partial() and default_args ---------------------------------------------------------------

def test_partial_merges_dag_and_group_default_args_under_explicit_values():
    defaults = {"retries": 2, "queue": "dq", "retry_delay": timedelta(seconds=7), "pool": "dp"}
    with DAG("d", schedule=None, default_args=defaults) as d:
        BashOperator.partial(task_id="explicit", retries=1).expand(bash_command=["x"])
        BashOperator.partial(task_id="inherited").expand(bash_command=gen())
        with TaskGroup("tg", default_args={"retries": 3, "pool": "gp"}):
            BashOperator.partial(task_id="grouped").expand(bash_command=["x"])
            BashOperator.partial(task_id="zero", retries=0).expand(bash_command=["x"])
            show.override(retries=5).expand(a=[1])
            show.expand(a=[1])
    spec = spec_of(d)
    got = {t.task_id: (t.retries, t.retry_delay_s, t.queue, t.pool) for t in spec.tasks if t.mapped}
    assert got == {
        "explicit": (1, 7.0, "dq", "dp"), "inherited": (2, 7.0, "dq", "dp"),
        "tg.grouped": (3, 7.0, "dq", "gp"), "tg.zero": (0, 7.0, "dq", "gp"),
        "tg.show": (5, 7.0, "dq", "gp"), "tg.show__1": (3, 7.0, "dq", "gp")}


@pytest.mark.parametrize("rule", ["all_done", "none_failed"])
def test_a_default_trigger_rule_reaches_mapped_tasks(rule):
    with DAG("d", schedule=None, default_args={"trigger_rule": rule}) as d:
        BashOperator.partial(task_id="classic").expand(bash_command=gen())
        show.expand(a=[1, 2])
    assert {t.task_id: t.trigger_rule for t in spec_of(d).tasks} == {
        "gen": rule, "classic": rule, "show": rule}
