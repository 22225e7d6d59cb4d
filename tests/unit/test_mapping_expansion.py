"""How many instances a mapped task gets, and when: the spec, arithmetic, verdicts, the SQL.

``scheduler/expansion.py`` and ``scheduler/decide.py`` are pure functions over
the ``DagSpec`` the parse server walks out of an ``airflow.sdk`` DAG and plain
run facts; the one statement that creates the instances
(``expand_placeholders``) runs on real PostgreSQL. Checking a producer's own
return value (type, ``None``) is the Task SDK's; its length limit is the
Execution API's (tests/sdk/test_execution_api.py).
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import dag, task
from airflow.sdk.definitions.mappedoperator import MappedOperator

from scheduler.decide import TIRow, decide
from scheduler.expansion import RunFacts, literal_length, mapped_producers, run_length
from scheduler.runs import task_instance_rows
from shared.db import q
from shared.serialization import DagSpec
from tests.unit.conftest import gen, show
from tests.unit.conftest import spec_of as dag_spec_of

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
START = datetime(2026, 1, 1)


@task
def gen2():
    return [1, 2]


def build(body):
    @dag(dag_id="d", start_date=START, schedule=None)
    def flow():
        body()

    return flow()


def spec_of(body) -> DagSpec:
    """The scheduler's spec of a DAG whose body is ``body``."""
    return dag_spec_of(build(body))


def states(**per_task: dict[str, int]) -> dict[str, Counter]:
    return {task_id: Counter(c) for task_id, c in per_task.items()}


DONE = {"success": 1}


# --- what the scheduler reads of a mapped task --------------------------------------------------

def test_the_spec_gives_literal_lengths_upstream_trees_and_dependencies():
    @dag(dag_id="d", start_date=START, schedule=None)
    def flow():
        nums = gen()
        show.partial(b=1).expand(a=nums)
        show.expand(a=[1, 2, 3], b={"x": 1, "y": 2})
        show.expand_kwargs([{"a": 1}, {"a": 2}])
        show.expand(a=nums.zip(nums, fillvalue=0).map(str).concat(nums))
        PythonOperator.partial(task_id="classic", python_callable=print).expand(op_args=[[1], [2]])

    d = flow()
    tasks = {t.task_id: t for t in dag_spec_of(d).tasks}
    plain = {"op": "plain", "task_id": "gen", "key": "return_value"}
    assert tasks["show"].mapped == {"kind": "dict_of_lists", "inputs": [{"key": "a", "xcom": plain}]}
    assert tasks["show"].upstream == ["gen"]
    assert tasks["show__1"].mapped["inputs"] == [{"key": "a", "length": 3}, {"key": "b", "length": 2}]
    assert tasks["show__1"].upstream == []
    assert tasks["show__2"].mapped == {"kind": "list_of_dicts", "length": 2}
    assert tasks["show__3"].mapped["inputs"][0]["xcom"] == {
        "op": "concat", "args": [{"op": "map", "arg": {"op": "zip", "args": [plain, plain],
                                                       "longest": True}}, plain]}
    assert tasks["show__3"].upstream == ["gen"]
    assert tasks["classic"].operator == "PythonOperator"
    assert tasks["classic"].mapped["inputs"] == [{"key": "op_args", "length": 2}]
    assert isinstance(d.get_task("classic"), MappedOperator)
    assert tasks["gen"].mapped is None


# --- literal lengths: instances at run creation, no placeholder --------------------------------

def test_literal_lengths_are_the_product_and_need_no_upstream():
    spec = spec_of(lambda: [show.expand(a=[1, 2, 3], b={"x": 1, "y": 2}),
                            show.expand_kwargs([{"a": 1}, {"a": 2}, {"a": 3}, {"a": 4}]),
                            show.expand(a=[1, 2], b=gen())])
    assert literal_length(spec.task("show").mapped) == 6
    assert literal_length(spec.task("show__1").mapped) == 4
    assert literal_length(spec.task("show__2").mapped) is None


def test_literal_instances_exist_at_run_creation_and_upstream_ones_are_one_placeholder():
    spec = spec_of(lambda: [show.expand(a=[1, 2, 3]), show.expand(a=gen()),
                            show.expand_kwargs([{"a": 1}, {"a": gen2()}]), show.expand(a=[])])
    rows = [(r[0], r[1]) for r in task_instance_rows(spec)]
    assert rows == [("show", 0), ("show", 1), ("show", 2), ("gen", -1), ("show__1", -1),
                    ("gen2", -1), ("show__2", 0), ("show__2", 1), ("show__3", -1)]


# --- lengths from upstream outputs ---------------------------------------------------------------

def test_an_unmapped_upstreams_length_is_its_task_map_row():
    spec = spec_of(lambda: [show.expand(a=gen()), show.expand(a=gen(), b=[1, 2, 3]),
                            show.expand_kwargs(gen())])
    facts = RunFacts(task_map={"gen": 4, "gen__1": 5, "gen__2": 2})
    done = states(gen=DONE, gen__1=DONE, gen__2=DONE)
    assert [run_length(spec.task(t), spec, facts, done) for t in ("show", "show__1", "show__2")] \
        == [4, 15, 2]


def test_mapped_over_mapped_counts_the_instances_that_returned_a_value():
    spec = spec_of(lambda: show.expand(a=show.expand(a=[1, 2, 3, 4])))
    consumer = spec.task("show__1")
    finished = states(show={"success": 3, "skipped": 1})
    assert run_length(consumer, spec, RunFacts(returned={"show": 2}), finished) == 2
    assert run_length(consumer, spec, RunFacts(), finished) == 0  # every one returned None


def test_zip_is_shortest_or_longest_and_concat_adds_and_map_keeps_the_length():
    spec = spec_of(lambda: [show.expand(a=gen().zip(gen2())),
                            show.expand(a=gen().zip(gen2(), fillvalue=None)),
                            show.expand(a=gen().concat(gen2()).map(str)),
                            show.expand(a=gen().map(str).zip(gen2().concat(gen())), b=[0, 1])])
    facts = RunFacts(task_map={"gen": 2, "gen2": 3, "gen__1": 4, "gen2__1": 5, "gen__2": 6,
                               "gen2__2": 7, "gen__3": 8, "gen2__3": 9, "gen__4": 10})
    done = states(**{t: DONE for t in facts.task_map})
    assert [run_length(spec.task(t), spec, facts, done) for t in
            ("show", "show__1", "show__2", "show__3")] == [
        min(2, 3), max(4, 5), 6 + 7, min(8, 9 + 10) * 2]


def test_zero_length_from_an_upstream_or_a_skipped_producer():
    spec = spec_of(lambda: show.expand(a=gen(), b=[1, 2]))
    assert run_length(spec.task("show"), spec, RunFacts(task_map={"gen": 0}), states(gen=DONE)) == 0
    assert run_length(spec.task("show"), spec, RunFacts(), states(gen={"skipped": 1})) == 0


@pytest.mark.parametrize("producer_states", [
    {None: 1}, {"queued": 1}, {"running": 1}, {"up_for_retry": 1}, {"deferred": 1},
])
def test_the_length_is_unknown_until_the_producer_finished(producer_states):
    spec = spec_of(lambda: show.expand(a=gen()))
    facts = RunFacts(task_map={"gen": 3})  # even a stale row does not count while it runs again
    assert run_length(spec.task("show"), spec, facts, states(gen=producer_states)) is None


def test_unknown_while_any_producer_of_a_zip_or_any_mapped_instance_is_unfinished():
    spec = spec_of(lambda: [show.expand(a=gen().zip(gen2())),
                            show.expand(a=show.expand(a=[1, 2, 3]))])
    facts = RunFacts(task_map={"gen": 2, "gen2": 2}, returned={"show__1": 2})
    assert run_length(spec.task("show"), spec, facts, states(gen=DONE, gen2={"running": 1})) is None
    mapped = spec.task("show__2")  # over show__1, the literal one
    assert run_length(mapped, spec, facts, states(show__1={"success": 2, "running": 1})) is None
    assert run_length(mapped, spec, facts, states(show__1={"success": 2, "failed": 1})) == 2


def test_success_without_a_task_map_row_is_not_a_length():
    spec = spec_of(lambda: show.expand(a=gen()))
    assert run_length(spec.task("show"), spec, RunFacts(), states(gen=DONE)) is None


def test_the_producers_of_a_mapped_input_are_every_plain_reference():
    spec = spec_of(lambda: [show.expand(a=gen().zip(gen2()).map(str).concat(gen())),
                            show.partial(b=gen()).expand(a=[1])])
    assert mapped_producers(spec.task("show").mapped) == {"gen", "gen2", "gen__1"}
    assert mapped_producers(spec.task("show__1").mapped) == set()


# --- the scheduler's verdict for a placeholder (scheduler/decide.py) ----------------------------

RULES = ["all_success", "all_failed", "all_done", "all_done_min_one_success", "all_skipped",
         "one_success", "one_failed", "one_done", "none_failed", "none_failed_min_one_success",
         "none_skipped", "always"]


def placeholder_dag(rule: str = "all_success", *, after: str | None = None) -> DagSpec:
    """make >> use (mapped over make) [>> after]; built by hand: 'always' cannot load."""
    mapped = {"kind": "dict_of_lists",
              "inputs": [{"key": "x", "xcom": {"op": "plain", "task_id": "make", "key": "return_value"}}]}
    tasks = [{"task_id": "make", "operator": "X", "upstream": [], "downstream": ["use"]},
             {"task_id": "use", "operator": "X", "upstream": ["make"],
              "downstream": ["after"] if after else [], "trigger_rule": rule, "mapped": mapped}]
    if after:
        tasks.append({"task_id": "after", "operator": "X", "upstream": ["use"], "downstream": [],
                      "trigger_rule": after})
    return DagSpec(dag_id="d", fileloc="f.py", tasks=tasks)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("producer", ["failed", "upstream_failed"])
def test_a_failed_producer_makes_the_placeholder_upstream_failed_whatever_its_rule(rule, producer):
    tis = [TIRow(0, "make", -1, producer), TIRow(1, "use", -1, None)]
    d = decide(placeholder_dag(rule), tis, NOW, RunFacts())
    assert d.end == {1: "upstream_failed"} and d.queue == [] and d.expand == {}
    assert d.run_state == "failed"


@pytest.mark.parametrize("rule", ["all_done", "one_failed", "none_failed"])
def test_one_failed_producer_of_a_zip_is_enough(rule):
    spec = spec_of(lambda: show.override(trigger_rule=rule).expand(a=gen().zip(gen2())))
    tis = [TIRow(0, "gen", -1, "success"), TIRow(1, "gen2", -1, "failed"), TIRow(2, "show", -1, None)]
    d = decide(spec, tis, NOW, RunFacts(task_map={"gen": 2}))
    assert d.end == {2: "upstream_failed"} and d.expand == {}


def test_a_known_length_expands_in_the_same_step_that_learns_it():
    tis = [TIRow(0, "make", -1, "success"), TIRow(1, "use", -1, None)]
    d = decide(placeholder_dag(), tis, NOW, RunFacts(task_map={"make": 5}))
    assert d.expand == {1: 5} and d.queue == [] and d.end == {} and d.run_state is None


def test_an_unknown_length_waits_without_deciding():
    tis = [TIRow(0, "make", -1, "running"), TIRow(1, "use", -1, None)]
    d = decide(placeholder_dag("all_done"), tis, NOW, RunFacts())
    assert (d.expand, d.queue, d.end, d.run_state) == ({}, [], {}, None)


@pytest.mark.parametrize("rule", ["all_success", "all_done", "none_failed", "one_success"])
def test_zero_length_skips_the_placeholder_downstreams_follow_and_the_run_succeeds(rule):
    spec = placeholder_dag(rule, after="all_success")
    tis = [TIRow(0, "make", -1, "success"), TIRow(1, "use", -1, None), TIRow(2, "after", -1, None)]
    d = decide(spec, tis, NOW, RunFacts(task_map={"make": 0}))
    assert d.end == {1: "skipped", 2: "skipped"} and d.expand == {} and d.queue == []
    assert d.run_state == "success"


def test_after_zero_length_an_all_done_downstream_still_runs():
    spec = placeholder_dag(after="all_done")
    tis = [TIRow(0, "make", -1, "success"), TIRow(1, "use", -1, None), TIRow(2, "after", -1, None)]
    d = decide(spec, tis, NOW, RunFacts(task_map={"make": 0}))
    assert d.end == {1: "skipped"} and d.queue == [2] and d.run_state is None


def test_mapped_over_mapped_expands_to_the_returned_count_or_skips_at_zero():
    spec = spec_of(lambda: show.expand(a=show.expand(a=[1, 2, 3])))
    tis = [TIRow(0, "show", 0, "success"), TIRow(1, "show", 1, "success"),
           TIRow(2, "show", 2, "success"), TIRow(3, "show__1", -1, None)]
    d = decide(spec, tis, NOW, RunFacts(returned={"show": 2}))  # one of them returned None
    assert d.expand == {3: 2}
    none_returned = decide(spec, tis, NOW, RunFacts(returned={}))
    assert none_returned.end == {3: "skipped"} and none_returned.expand == {}


def mapped_over_partly_failed(rule: str):
    """show (3 instances, index 1 failed) >> show__1 mapped over show's values."""
    spec = spec_of(lambda: show.override(trigger_rule=rule).expand(a=show.expand(a=[1, 2, 3])))
    tis = [TIRow(0, "show", 0, "success"), TIRow(1, "show", 1, "failed"),
           TIRow(2, "show", 2, "success"), TIRow(3, "show__1", -1, None)]
    return spec, tis


def test_a_partly_failed_mapped_producer_is_expanded_over_its_surviving_values_under_all_done():
    spec, tis = mapped_over_partly_failed("all_done")
    d = decide(spec, tis, NOW, RunFacts(returned={"show": 2}))
    assert d.expand == {3: 2} and d.end == {}


@pytest.mark.parametrize("rule", ["all_success", "none_failed"])
def test_a_partly_failed_mapped_producer_fails_a_consumer_whose_rule_needs_it(rule):
    spec, tis = mapped_over_partly_failed(rule)
    d = decide(spec, tis, NOW, RunFacts(returned={"show": 2}))
    assert d.end == {3: "upstream_failed"} and d.expand == {}


def test_a_mapped_producer_that_failed_everywhere_leaves_an_all_done_consumer_nothing_to_map():
    spec = spec_of(lambda: show.override(trigger_rule="all_done").expand(a=show.expand(a=[1, 2])))
    tis = [TIRow(0, "show", 0, "failed"), TIRow(1, "show", 1, "failed"),
           TIRow(2, "show__1", -1, None)]
    d = decide(spec, tis, NOW, RunFacts(returned={}))
    assert d.end == {2: "skipped"} and d.expand == {}


def test_a_mapped_producer_that_never_expanded_fails_its_consumers_whatever_their_rule():
    """gen fails -> show (over gen) stays an upstream_failed placeholder -> show__1 over show."""
    spec = spec_of(lambda: show.override(trigger_rule="all_done").expand(a=show.expand(a=gen())))
    in_one_pass = decide(spec, [TIRow(0, "gen", -1, "failed"), TIRow(1, "show", -1, None),
                                TIRow(2, "show__1", -1, None)], NOW, RunFacts())
    assert in_one_pass.end == {1: "upstream_failed", 2: "upstream_failed"}
    assert in_one_pass.run_state == "failed"
    # a later pass, holding only the consumer's row, learns it from the run's facts
    later = decide(spec, [TIRow(2, "show__1", -1, None)], NOW,
                   RunFacts(failed_unexpanded={"gen", "show"}),
                   counts=states(gen={"failed": 1}, show={"upstream_failed": 1},
                                 show__1={None: 1}))
    assert later.end == {2: "upstream_failed"} and later.expand == {}


# --- expand_placeholders on real PostgreSQL: one statement -----------------------------------

async def make_run(db) -> int:
    await db.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized)"
                     " VALUES ('d', 'd.py', 'h', '{}')")
    return await db.fetchval(
        "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state, start_date)"
        " VALUES ('d', 'r1', 'manual', now(), 'running', now()) RETURNING id")


async def placeholder(db, run_pk: int, task_id: str, state: str | None = None) -> int:
    return await db.fetchval(
        "INSERT INTO task_instance (run_pk, task_id, map_index, state, max_tries, queue, pool,"
        " pool_slots, priority_weight) VALUES ($1, $2, -1, $3, 2, 'q', 'p', 3, 7) RETURNING id",
        run_pk, task_id, state)


async def instances(db, task_id: str) -> list[tuple]:
    rows = await db.fetch(
        "SELECT map_index, state, max_tries, queue, pool, pool_slots, priority_weight"
        " FROM task_instance WHERE task_id = $1 ORDER BY map_index", task_id)
    return [tuple(r) for r in rows]


async def test_expand_placeholders_creates_ten_thousand_instances_in_one_statement(db):
    run_pk = await make_run(db)
    big, small = await placeholder(db, run_pk, "big"), await placeholder(db, run_pk, "small")
    started = time.perf_counter()
    status = await db.execute(q("expand_placeholders"), [big, small], [10_000, 3])
    elapsed = time.perf_counter() - started
    print(f"expand_placeholders: 10,000 + 3 instances in {elapsed * 1000:.1f} ms")
    assert status == f"INSERT 0 {9_999 + 2}"
    assert await instances(db, "big") == [(i, None, 2, "q", "p", 3, 7) for i in range(10_000)]
    assert await instances(db, "small") == [(i, None, 2, "q", "p", 3, 7) for i in range(3)]
    # the placeholder itself became map_index 0 (same row, same id)
    assert await db.fetchval("SELECT map_index FROM task_instance WHERE id = $1", big) == 0
    assert elapsed < 5.0


async def test_expand_placeholders_is_idempotent_and_leaves_decided_placeholders_alone(db):
    run_pk = await make_run(db)
    one = await placeholder(db, run_pk, "one")
    skipped = await placeholder(db, run_pk, "skipped", state="skipped")
    await db.execute(q("expand_placeholders"), [one, skipped], [1, 4])
    assert await instances(db, "one") == [(0, None, 2, "q", "p", 3, 7)]
    assert await instances(db, "skipped") == [(-1, "skipped", 2, "q", "p", 3, 7)]
    assert await db.execute(q("expand_placeholders"), [one], [1]) == "INSERT 0 0"
    assert await instances(db, "one") == [(0, None, 2, "q", "p", 3, 7)]


async def test_a_task_map_row_keeps_the_dict_keys_in_insertion_order(db):
    run_pk = await make_run(db)
    await db.execute(q("put_task_map"), run_pk, "make", -1, 3, ["zeta", "alpha", "mu"])
    assert await db.fetchval(q("task_map_length"), run_pk, "make") == 3
    assert [tuple(r) for r in await db.fetch(q("run_task_maps"), run_pk)] == [("make", 3)]
    assert await db.fetchval("SELECT keys FROM task_map WHERE run_pk = $1", run_pk) == [
        "zeta", "alpha", "mu"]


def test_a_producer_that_succeeded_without_recording_a_length_fails_the_mapped_task():
    """E.g. ended from the triggerer by TaskSuccessEvent: no length will ever come."""
    tis = [TIRow(0, "make", -1, "success"), TIRow(1, "use", -1, None)]
    d = decide(placeholder_dag("all_done"), tis, NOW, RunFacts())
    assert d.end == {1: "upstream_failed"} and d.expand == {} and d.run_state == "failed"
