"""Setup and teardown tasks, decided by the scheduler as Airflow 3.3 decides them.

Each DAG is written with the Task SDK (``@setup``, ``@teardown``, ``as_setup()``,
``as_teardown(setups=...)``, context managers), walked into the scheduler's spec,
and run to its end by ``decide`` with scripted task outcomes. The expected
states are Airflow's documented ones (docs "Setup and teardown", and the
source named where a result surprises):

* ``TriggerRuleDep._evaluate_setup_constraint``:
  https://github.com/apache/airflow/blob/3.0.0/airflow-core/src/airflow/ti_deps/deps/trigger_rule_dep.py
* ``TriggerRuleDep._evaluate_teardown_scope`` (same file);
* ``DagRun._tis_for_dagrun_state``:
  https://github.com/apache/airflow/blob/3.0.0/airflow-core/src/airflow/models/dagrun.py
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from airflow.sdk import DAG, setup, task, task_group, teardown

from scheduler.decide import TIRow, decide
from scheduler.expansion import RunFacts
from scheduler.runs import task_instance_rows
from scheduler.setups import effective_leaves, structure
from shared.serialization import DagSpec
from tests.unit.conftest import spec_of

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
Outcome = Callable[[str, int], str]


def run_to_end(spec: DagSpec, outcomes: dict[str, str | dict[int, str]] | None = None,
               lengths: dict[str, int] | None = None) -> tuple[dict[str, object], str]:
    """Decide, run what is queued (its outcome, default success), until the run ends.

    Returns each task's state (a dict by map index for mapped tasks) and the run's.
    """
    outcomes = outcomes or {}
    rows = {i: TIRow(i, t, m, None) for i, (t, m, *_rest) in enumerate(task_instance_rows(spec))}
    facts = RunFacts(task_map=dict(lengths or {}))
    for _ in range(50):
        d = decide(spec, list(rows.values()), NOW, RunFacts(task_map=dict(facts.task_map)))
        for ti_id in d.queue:
            ti = rows[ti_id]
            out = outcomes.get(ti.task_id, "success")
            ti.state = out.get(ti.map_index, "success") if isinstance(out, dict) else out
        for ti_id, state in d.end.items():
            rows[ti_id].state = state
        for ti_id, n in d.expand.items():
            old = rows.pop(ti_id)
            nxt = max(rows) + 1
            for k in range(n):
                rows[nxt + k] = TIRow(nxt + k, old.task_id, k, None)
        if d.run_state is not None:
            return _states(spec, rows), d.run_state
        assert d.queue or d.end or d.expand, f"stuck: {_states(spec, rows)}"
    raise AssertionError("no end")


def _states(spec: DagSpec, rows: dict[int, TIRow]) -> dict[str, object]:
    out: dict[str, object] = {}
    for t in spec.tasks:
        mine = sorted((r for r in rows.values() if r.task_id == t.task_id), key=lambda r: r.map_index)
        out[t.task_id] = (mine[0].state if len(mine) == 1 and mine[0].map_index < 0
                          else {r.map_index: r.state for r in mine})
    return out


@task
def work():
    pass


@task
def other():
    pass


def cluster_dag(**teardown_kwargs) -> DagSpec:
    """The docs' example: create_cluster >> run_query >> delete_cluster (its teardown)."""
    with DAG("st", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        create = work.override(task_id="create_cluster")()
        query = work.override(task_id="run_query")()
        delete = work.override(task_id="delete_cluster")()
        create >> query >> delete.as_teardown(setups=create, **teardown_kwargs)
    return spec_of(dag)


def test_the_spec_marks_setups_and_teardowns_and_the_teardown_rule():
    spec = cluster_dag()
    t = spec.task_map
    assert t["create_cluster"].is_setup and t["delete_cluster"].is_teardown
    assert t["delete_cluster"].trigger_rule == "all_done_setup_success"
    assert effective_leaves(spec) == ["run_query"]


def test_all_succeed_and_the_run_succeeds():
    states, run = run_to_end(cluster_dag())
    assert states == dict.fromkeys(("create_cluster", "run_query", "delete_cluster"), "success")
    assert run == "success"


def test_a_failed_setup_fails_the_work_and_the_teardown_does_not_run():
    """Docs: a teardown runs only when one of its setups succeeded."""
    states, run = run_to_end(cluster_dag(), {"create_cluster": "failed"})
    assert states == {"create_cluster": "failed", "run_query": "upstream_failed",
                      "delete_cluster": "upstream_failed"}
    assert run == "failed"


def test_failed_work_still_runs_the_teardown_and_fails_the_run():
    states, run = run_to_end(cluster_dag(), {"run_query": "failed"})
    assert states == {"create_cluster": "success", "run_query": "failed",
                      "delete_cluster": "success"}
    assert run == "failed"


def test_a_failed_teardown_does_not_fail_the_run():
    """Surprising: the run succeeds although a task failed (``_tis_for_dagrun_state``)."""
    states, run = run_to_end(cluster_dag(), {"delete_cluster": "failed"})
    assert states["delete_cluster"] == "failed"
    assert run == "success"


def test_on_failure_fail_dagrun_makes_a_failed_teardown_fail_the_run():
    spec = cluster_dag(on_failure_fail_dagrun=True)
    assert spec.task("delete_cluster").on_failure_fail_dagrun
    assert sorted(effective_leaves(spec)) == ["delete_cluster"]
    _, run = run_to_end(spec, {"delete_cluster": "failed"})
    assert run == "failed"
    _, run = run_to_end(spec)
    assert run == "success"


def test_a_skipped_setup_skips_the_work_and_the_teardown():
    states, run = run_to_end(cluster_dag(), {"create_cluster": "skipped"})
    assert states == dict.fromkeys(("create_cluster", "run_query", "delete_cluster"), "skipped")
    assert run == "success"


def test_the_teardown_runs_when_one_of_two_setups_succeeded():
    """ALL_DONE_SETUP_SUCCESS needs one setup success, not all."""
    with DAG("two", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        s1, s2 = work.override(task_id="s1")(), work.override(task_id="s2")()
        w, t = work.override(task_id="w")(), work.override(task_id="t")()
        [s1, s2] >> w >> t.as_teardown(setups=[s1, s2])
    states, run = run_to_end(spec_of(dag), {"s2": "failed"})
    assert states == {"s1": "success", "s2": "failed", "w": "upstream_failed", "t": "success"}
    assert run == "failed"


def test_decorators_and_the_context_manager_wire_setup_and_teardown():
    with DAG("deco", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        @setup
        def make_bucket():
            pass

        @teardown
        def drop_bucket():
            pass

        with make_bucket() >> drop_bucket():
            work.override(task_id="w1")() >> work.override(task_id="w2")()
    spec = spec_of(dag)
    assert spec.task("w1").upstream == ["make_bucket"]
    assert spec.task("drop_bucket").upstream == ["make_bucket", "w2"]
    states, run = run_to_end(spec, {"w1": "failed"})
    assert states == {"make_bucket": "success", "drop_bucket": "success", "w1": "failed",
                      "w2": "upstream_failed"}
    assert run == "failed"


def test_an_indirect_setup_that_failed_fails_a_work_task_whatever_its_rule():
    """Surprising: ``all_done`` would run, but an indirect setup must succeed
    (``_evaluate_setup_constraint``: a failed setup sets upstream_failed at once)."""
    with DAG("indirect", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        s, w1 = work.override(task_id="s")(), work.override(task_id="w1")()
        w2 = work.override(task_id="w2", trigger_rule="all_done")()
        t = work.override(task_id="t")()
        s >> w1 >> w2 >> t.as_teardown(setups=s)
    spec = spec_of(dag)
    assert structure(spec).indirect_setups == {"w2": ("s",)}
    states, run = run_to_end(spec, {"s": "failed"})
    assert states == {"s": "failed", "w1": "upstream_failed", "w2": "upstream_failed",
                      "t": "upstream_failed"}
    assert run == "failed"
    # without the setup failing, all_done runs after a failed w1 as usual
    states, _ = run_to_end(spec, {"w1": "failed"})
    assert states["w2"] == "success" and states["t"] == "success"


def test_an_indirect_setup_that_was_skipped_skips_the_work_task():
    with DAG("indirect_skip", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        s, w1 = work.override(task_id="s")(), work.override(task_id="w1", trigger_rule="always")()
        w2 = work.override(task_id="w2", trigger_rule="all_done")()
        t = work.override(task_id="t")()
        s >> w1 >> w2 >> t.as_teardown(setups=s)
    states, _ = run_to_end(spec_of(dag), {"s": "skipped"})
    # always ignores the setup check (TriggerRuleDep returns before it), all_done does not
    assert states == {"s": "skipped", "w1": "success", "w2": "skipped", "t": "skipped"}


def test_a_setup_whose_teardowns_all_ran_before_is_out_of_scope():
    """``get_upstreams_only_setups``: a setup is relevant to a task only if it has no
    teardown or one of its teardowns is downstream of the task."""
    with DAG("scope", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        s, w1, t = work.override(task_id="s")(), work.override(task_id="w1")(), work.override(task_id="t")()
        after = work.override(task_id="after", trigger_rule="all_done")()
        s >> w1 >> t.as_teardown(setups=s)
        t >> after
    spec = spec_of(dag)
    assert structure(spec).indirect_setups == {}
    states, run = run_to_end(spec, {"s": "failed"})
    assert states["after"] == "success"  # all_done, and s is out of its scope
    assert run == "failed"


def test_a_teardown_waits_for_the_tasks_in_its_scope():
    """``_evaluate_teardown_scope``: the teardown's rule passed (its direct upstreams are
    done) but b, between its setup and itself, still runs: it waits."""
    with DAG("tscope", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        s = work.override(task_id="s")()
        a, b = work.override(task_id="a")(), work.override(task_id="b")()
        c = work.override(task_id="c", trigger_rule="one_success")()
        t = work.override(task_id="t")()
        s >> [a, b] >> c >> t.as_teardown(setups=s)
    spec = spec_of(dag)
    assert structure(spec).teardown_scope == {"t": ("a", "b")}
    rows = [TIRow(0, "s", -1, "success"), TIRow(1, "a", -1, "success"),
            TIRow(2, "b", -1, "running"), TIRow(3, "c", -1, "success"), TIRow(4, "t", -1, None)]
    assert decide(spec, rows, NOW).queue == []
    rows[2].state = "failed"
    assert decide(spec, rows, NOW).queue == [4]


def test_a_dag_of_only_teardowns_is_judged_on_its_leaves():
    with DAG("only", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        work.override(task_id="t1")().as_teardown()
    spec = spec_of(dag)
    assert effective_leaves(spec) == ["t1"]
    assert run_to_end(spec, {"t1": "failed"})[1] == "failed"


def test_a_mapped_setup_lets_the_teardown_run_when_one_instance_succeeded():
    with DAG("mapped_setup", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        @setup
        def prepare(x):
            pass

        s = prepare.expand(x=[1, 2, 3])
        t = work.override(task_id="t")()
        s >> work.override(task_id="w")() >> t.as_teardown(setups=s)
    states, run = run_to_end(spec_of(dag), {"prepare": {1: "failed"}})
    assert states == {"prepare": {0: "success", 1: "failed", 2: "success"},
                      "w": "upstream_failed", "t": "success"}
    assert run == "failed"


def test_a_mapped_setup_all_skipped_skips_the_teardown():
    with DAG("mapped_skip", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        @setup
        def prepare(x):
            pass

        s = prepare.expand(x=[1, 2])
        s >> work.override(task_id="w")() >> work.override(task_id="t")().as_teardown(setups=s)
    states, run = run_to_end(spec_of(dag), {"prepare": "skipped"})
    assert states == {"prepare": {0: "skipped", 1: "skipped"}, "w": "skipped", "t": "skipped"}
    assert run == "success"


def test_setup_and_teardown_in_a_mapped_group_are_per_index():
    """Airflow's ``test_mapped_task_group_simple``: the setup raises for the second
    element and skips for the third (AIRFLOW-REFERENCE 1.8)."""
    with DAG("mapped_group", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        @setup
        def my_setup(x):
            pass

        @task
        def my_work(x):
            pass

        @teardown
        def my_teardown(x):
            pass

        @task_group
        def file_transforms(x):
            s = my_setup(x)
            w = my_work(x)
            s >> w >> my_teardown(x).as_teardown(setups=s)

        file_transforms.expand(x=["data1", "data2", "data3"])
    spec = spec_of(dag)
    states, run = run_to_end(spec, {"file_transforms.my_setup": {1: "failed", 2: "skipped"}})
    assert states == {
        "file_transforms.my_setup": {0: "success", 1: "failed", 2: "skipped"},
        "file_transforms.my_work": {0: "success", 1: "upstream_failed", 2: "skipped"},
        "file_transforms.my_teardown": {0: "success", 1: "upstream_failed", 2: "skipped"}}
    assert run == "failed"


def test_an_indirect_setup_in_a_mapped_group_is_read_at_the_same_index():
    with DAG("group_indirect", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        @setup
        def s(x):
            pass

        @task
        def w1(x):
            pass

        @task(trigger_rule="all_done")
        def w2(x):
            pass

        @teardown
        def t(x):
            pass

        @task_group
        def g(x):
            one = s(x)
            one >> w1(x) >> w2(x) >> t(x).as_teardown(setups=one)

        g.expand(x=[1, 2])
    states, _ = run_to_end(spec_of(dag), {"g.s": {0: "failed"}, "g.w1": {1: "failed"}})
    assert states["g.w2"] == {0: "upstream_failed", 1: "success"}
    assert states["g.t"] == {0: "upstream_failed", 1: "success"}


@pytest.mark.parametrize("setup_outcome,work_state,teardown_state,run", [
    ("success", "success", "success", "success"),
    ("failed", "upstream_failed", "upstream_failed", "failed"),
    ("skipped", "skipped", "skipped", "success"),
])
def test_a_setup_feeding_a_mapped_work_task(setup_outcome, work_state, teardown_state, run):
    with DAG("mapped_work", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        @task
        def each(x):
            pass

        s = work.override(task_id="s")()
        w = each.expand(x=[1, 2])
        s >> w >> work.override(task_id="t")().as_teardown(setups=s)
    states, got = run_to_end(spec_of(dag), {"s": setup_outcome})
    assert states["each"] == {0: work_state, 1: work_state}
    assert (states["t"], got) == (teardown_state, run)


def test_dags_without_setups_have_no_structure_to_read():
    with DAG("plain", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        work.override(task_id="a")() >> other.override(task_id="b")()
    spec = spec_of(dag)
    st = structure(spec)
    assert (st.indirect_setups, st.teardown_scope, st.direct_setups) == ({}, {}, {})
    assert effective_leaves(spec) == ["b"]


# --- cases of Airflow's own tests (tests/unit/models/test_dagrun.py,
# tests/unit/ti_deps/deps/test_trigger_rule_dep.py), rebuilt here ----------------------------
@setup
def setup_task():
    pass


@teardown
def teardown_task():
    pass


def wired(statements: list[str]) -> DagSpec:
    """A DAG from lines like ``s1 >> w1 >> t1_``: s = setup, w = work, t = teardown,
    t..._ = teardown with on_failure_fail_dagrun (Airflow's test_tis_considered_for_state)."""
    made: dict = {}
    with DAG("wired", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        def make(task_id: str):
            if task_id not in made:
                if task_id.startswith("s"):
                    made[task_id] = setup_task.override(task_id=task_id)()
                elif task_id.startswith("w"):
                    made[task_id] = work.override(task_id=task_id)()
                else:
                    made[task_id] = teardown_task.override(
                        task_id=task_id, on_failure_fail_dagrun=task_id.endswith("_"))()
            return made[task_id]

        for line in statements:
            ids = [p.strip() for p in line.split(">>")]
            for task_id in ids:
                make(task_id)
            for left, right in zip(ids, ids[1:], strict=False):
                make(left) >> make(right)
    return spec_of(dag)


@pytest.mark.parametrize("statements,leaves", [
    (["s1 >> w1 >> t1"], {"w1"}),
    (["s1 >> w1 >> t1", "s1 >> t1"], {"w1"}),
    (["s1 >> w1"], {"w1"}),
    (["s1 >> w1 >> t1_"], {"t1_"}),
    (["s1 >> w1 >> t1_", "s1 >> t1_"], {"t1_"}),
    (["s1 >> w1 >> t1_ >> w2", "s1 >> t1_"], {"w2"}),
    (["t1 >> t2"], {"t2"}),  # all teardowns: the plain leaves
    (["w1 >> t1_ >> t2"], {"t1_"}),  # teardown to teardown
])
def test_the_tasks_a_runs_state_is_judged_on(statements, leaves):
    """Airflow's ``test_tis_considered_for_state`` table."""
    assert set(effective_leaves(wired(statements))) == leaves


@pytest.mark.parametrize("fail_dagrun,run", [(False, "success"), (True, "failed")])
def test_a_failed_teardown_before_another_teardown(fail_dagrun, run):
    """Airflow's ``test_teardown_failure_on_non_leaf_behaviour_on_dagrun``."""
    spec = wired(["w1 >> t1_ >> t2"] if fail_dagrun else ["w1 >> t1 >> t2"])
    first = "t1_" if fail_dagrun else "t1"
    _, got = run_to_end(spec, {first: "failed", "t2": "failed"})
    assert got == run


def test_a_failed_work_task_not_wired_to_the_teardown_fails_the_run():
    """Airflow's ``test_failure_of_leaf_task_not_connected_to_teardown_task``."""
    spec = wired(["s1", "t1", "w1"])
    assert run_to_end(spec, {"w1": "failed"})[1] == "failed"


@pytest.mark.parametrize("setup_state,expected", [
    ("failed", "upstream_failed"), ("skipped", "skipped")])
def test_one_failed_or_skipped_setup_ends_the_work_at_once(setup_state, expected):
    """Airflow's ``test_setup_constraint_will_fail_or_skip_fast``: the other setup still
    runs, yet w1 (direct) and w2 (indirect) end in the same pass."""
    spec = wired(["s1 >> w1 >> w2", "s2 >> w1"])
    rows = [TIRow(0, "s1", -1, "running"), TIRow(1, "s2", -1, setup_state),
            TIRow(2, "w1", -1, None), TIRow(3, "w2", -1, None)]
    d = decide(spec, rows, NOW)
    assert d.end == {2: expected, 3: expected} and d.run_state is None


def test_an_unfinished_setup_keeps_both_checks_waiting():
    """Airflow's ``test_setup_constraint_blocks_execution``."""
    spec = wired(["s1 >> w1 >> w2"])
    rows = [TIRow(0, "s1", -1, "running"), TIRow(1, "w1", -1, "success"), TIRow(2, "w2", -1, None)]
    assert decide(spec, rows, NOW).queue == []  # w1 ended (say, marked) but s1 still runs
    rows[0].state = "success"
    assert decide(spec, rows, NOW).queue == [2]


def test_an_indirect_setup_skipped_before_a_mapped_group_expanded():
    """Airflow's ``test_setup_mapped_task_group_finished_upstream_before_expand``: t3 (in a
    group mapped over a literal, all_done) has t1 as an indirect setup; t1 skipped."""
    with DAG("group_setup", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        @task(trigger_rule="all_done")
        def t(x):
            return x

        @task_group
        def tg(x):
            return t.override(task_id="t3")(x=x)

        vals = t.override(task_id="t1")([1, 2]).as_setup()
        t.override(task_id="t2").expand(x=vals).as_setup() >> tg.expand(x=[1, 2]).as_setup()
    spec = spec_of(dag)
    assert structure(spec).indirect_setups["tg.t3"] == ("t1",)
    rows = [TIRow(0, "t1", -1, "skipped"), TIRow(1, "t2", -1, "success"),
            TIRow(2, "tg.t3", 0, None), TIRow(3, "tg.t3", 1, None)]
    assert decide(spec, rows, NOW).end == {2: "skipped", 3: "skipped"}


def test_removed_instances_of_a_mapped_indirect_setup_remove_the_indexes_past_them():
    """``_evaluate_setup_constraint``: removed setups and map_index >= successes: removed
    (Airflow's ``test_setup_constraint_mapped_task_upstream_removed_and_success``)."""
    with DAG("removed", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        @task
        def each(x):
            pass

        s = each.override(task_id="s").expand(x=[1, 2, 3]).as_setup()
        w1 = work.override(task_id="w1", trigger_rule="always")()
        w2 = each.override(task_id="w2", trigger_rule="all_done").expand(x=[1, 2, 3])
        s >> w1 >> w2 >> work.override(task_id="t")().as_teardown(setups=s)
    spec = spec_of(dag)
    rows = ([TIRow(i, "s", i, st) for i, st in enumerate(["success", "success", "removed"])]
            + [TIRow(3, "w1", -1, "success")] + [TIRow(4 + i, "w2", i, None) for i in range(3)])
    d = decide(spec, rows, NOW)
    assert d.queue == [4, 5] and d.end == {6: "removed"}
