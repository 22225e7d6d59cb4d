"""``depends_on_past``, ``wait_for_downstream`` and ``ignore_first_depends_on_past``.

The rules are Airflow 3.3's ``PrevDagrunDep``
(https://github.com/apache/airflow/blob/3.0.0/airflow-core/src/airflow/ti_deps/deps/prev_dagrun_dep.py)
and ``DagRun.get_previous_dagrun`` / ``get_previous_scheduled_dagrun``
(https://github.com/apache/airflow/blob/3.0.0/airflow-core/src/airflow/models/dagrun.py).
The pure rule (``blocked_by``), its effect on ``decide``, then the reads the
scheduler pass makes on PostgreSQL and the wake-up of the runs after a run.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from airflow.sdk import DAG, task

from scheduler.decide import TIRow, decide
from scheduler.past import PastWaker, PrevRun, blocked, blocked_by, watched
from shared.serialization import DagSpec
from tests.unit.conftest import spec_of

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
DAY = timedelta(days=1)
START = datetime(2026, 1, 1, tzinfo=UTC)


@task
def work():
    pass


def past_dag(catchup: bool = False, **kwargs) -> DagSpec:
    """a (depends_on_past, with ``kwargs``) >> b; c alone."""
    with DAG("past", start_date=START, schedule="@daily", catchup=catchup) as dag:
        a = work.override(task_id="a", depends_on_past=True, **kwargs)()
        a >> work.override(task_id="b")()
        work.override(task_id="c")()
    return spec_of(dag)


def prev(instances: dict[str, int], unsettled: dict[str, int] | None = None,
         when: datetime = START) -> PrevRun:
    return PrevRun(when, instances, unsettled or {})


def test_the_spec_carries_the_fields_and_wait_for_downstream_implies_depends_on_past():
    with DAG("fields", start_date=START, schedule=None) as dag:
        work.override(task_id="w", wait_for_downstream=True)()
        work.override(task_id="i", depends_on_past=True, ignore_first_depends_on_past=True)()
    t = spec_of(dag).task_map
    assert (t["w"].depends_on_past, t["w"].wait_for_downstream) == (True, True)
    # the Task SDK's default is False (DEFAULT_IGNORE_FIRST_DEPENDS_ON_PAST in its
    # abstractoperator.py), whatever [core] ignore_first_depends_on_past_by_default says
    assert not t["w"].ignore_first_depends_on_past
    assert t["i"].ignore_first_depends_on_past
    assert t["w"].start_date == START


def test_no_previous_run_lets_it_run():
    assert blocked_by(past_dag(), None, frozenset()) == frozenset()


@pytest.mark.parametrize("states,blocked", [
    ({"success": 1}, False),
    ({"skipped": 1}, False),  # skipped counts as settled
    ({"failed": 1}, True),
    ({"upstream_failed": 1}, True),
    ({"running": 1}, True),  # unfinished is "unsuccessful"
    ({None: 1}, True),
    ({"removed": 1}, True),  # surprising: removed is not success/skipped (_count_unsuccessful_tis)
])
def test_the_previous_instance_must_be_success_or_skipped(states, blocked):
    unsettled = sum(n for s, n in states.items() if s not in ("success", "skipped"))
    got = blocked_by(past_dag(), prev({"a": sum(states.values())}, {"a": unsettled}), frozenset())
    assert got == (frozenset({"a"}) if blocked else frozenset())


def test_every_map_index_of_the_previous_run_counts():
    """Surprising: Airflow 3.3 counts all the task's instances in the previous run, not
    the same map index (``_count_unsuccessful_tis`` filters by task_id only)."""
    spec = past_dag()
    assert blocked_by(spec, prev({"a": 3}, {"a": 1}), frozenset()) == {"a"}


def test_wait_for_downstream_waits_for_the_direct_downstreams_too():
    spec = past_dag(wait_for_downstream=True)
    assert watched(spec) == {"a", "b"}
    assert blocked_by(spec, prev({"a": 1, "b": 1}, {"b": 1}), frozenset()) == {"a"}
    assert blocked_by(spec, prev({"a": 1, "b": 1}), frozenset()) == frozenset()
    # without it, the downstream's state does not matter
    assert blocked_by(past_dag(), prev({"a": 1, "b": 1}, {"b": 1}), frozenset()) == frozenset()


def test_with_ignore_first_a_previous_run_without_the_task_lets_a_first_instance_run():
    """ignore_first_depends_on_past: no instance in the previous run and none before."""
    spec = past_dag(ignore_first_depends_on_past=True)
    assert blocked_by(spec, prev({"c": 1}), frozenset()) == frozenset()


def test_with_ignore_first_a_previous_run_without_the_task_blocks_when_an_earlier_run_had_it():
    """Surprising: the task then waits until that previous run's instance exists
    (Airflow: "the previous task instance has not run yet")."""
    spec = past_dag(ignore_first_depends_on_past=True)
    assert blocked_by(spec, prev({"c": 1}), frozenset({"a"})) == {"a"}


def test_by_default_a_previous_run_without_the_task_blocks_it():
    """Surprising: a task added to a DAG with depends_on_past waits forever (until its
    previous instance is marked) unless ignore_first_depends_on_past=True."""
    assert blocked_by(past_dag(), prev({"c": 1}), frozenset()) == {"a"}


def test_with_catchup_a_previous_run_before_the_tasks_start_date_lets_it_run():
    with DAG("late", start_date=START, schedule="@daily", catchup=True) as dag:
        work.override(task_id="a", depends_on_past=True, start_date=START + 5 * DAY)()
    spec = spec_of(dag)
    assert blocked_by(spec, prev({"a": 1}, {"a": 1}, START + DAY), frozenset()) == frozenset()
    assert blocked_by(spec, prev({"a": 1}, {"a": 1}, START + 6 * DAY), frozenset()) == {"a"}


def test_decide_makes_a_blocked_task_wait_and_its_run_not_deadlocked():
    spec = past_dag()
    rows = [TIRow(0, "a", -1, None), TIRow(1, "b", -1, None), TIRow(2, "c", -1, "success")]
    d = decide(spec, rows, NOW, past_blocked=frozenset({"a"}))
    assert (d.queue, d.end, d.run_state, d.deadlocked) == ([], {}, None, False)
    assert decide(spec, rows, NOW).queue == [0]


def test_a_blocked_task_can_still_be_ended_by_its_trigger_rule():
    """The scheduler's TriggerRuleDep sets upstream_failed/skipped whatever the past
    (``wait_for_past_depends_before_skipping`` is off in the scheduler's DepContext)."""
    with DAG("chain", start_date=START, schedule="@daily") as dag:
        up = work.override(task_id="up")()
        up >> work.override(task_id="a", depends_on_past=True)()
    rows = [TIRow(0, "up", -1, "failed"), TIRow(1, "a", -1, None)]
    d = decide(spec_of(dag), rows, NOW, past_blocked=frozenset({"a"}))
    assert d.end == {1: "upstream_failed"} and d.run_state == "failed"


def test_a_deadlock_is_not_declared_while_a_depends_on_past_task_is_unfinished():
    """Airflow's ``update_state`` skips deadlock detection when an unfinished task has
    depends_on_past (``_UnfinishedStates.should_schedule``)."""
    with DAG("dl", start_date=START, schedule="@daily") as dag:
        a = work.override(task_id="a", depends_on_past=True)()
        b = work.override(task_id="b", trigger_rule="all_skipped")()
        a >> b
    rows = [TIRow(0, "a", -1, None), TIRow(1, "b", -1, None)]
    d = decide(spec_of(dag), rows, NOW, past_blocked=frozenset({"a"}))
    assert d.run_state is None and not d.deadlocked


# --- on PostgreSQL --------------------------------------------------------------------------

async def add_dag(db, spec: DagSpec) -> None:
    await db.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized) VALUES ($1, $2, '', $3)",
                     spec.dag_id, spec.fileloc, json.dumps(spec.model_dump(mode="json")))


async def add_run(db, spec: DagSpec, day: int, states: dict[str, str | None | list],
                  run_type: str = "scheduled", run_state: str = "running") -> dict:
    when = START + day * DAY
    row = await db.fetchrow(
        "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state) VALUES ($1, $2, $3, $4, $5) "
        "RETURNING id, logical_date", spec.dag_id, f"{run_type}__{day}", run_type, when, run_state)
    for task_id, state in states.items():
        for i, st in enumerate(state if isinstance(state, list) else [state]):
            await db.execute("INSERT INTO task_instance (run_pk, task_id, map_index, state) "
                             "VALUES ($1, $2, $3, $4)", row["id"], task_id,
                             i if isinstance(state, list) else -1, st)
    return dict(row)


def undecided(*tasks: str) -> dict[str, Counter]:
    return {t: Counter({None: 1}) for t in tasks}


async def test_the_pass_reads_the_previous_run_by_logical_date(db):
    spec = past_dag()
    await add_dag(db, spec)
    await add_run(db, spec, 0, {"a": "failed", "b": "upstream_failed", "c": "success"})
    await add_run(db, spec, 1, {"a": "success", "b": "success", "c": "success"})
    later = await add_run(db, spec, 3, {"a": None, "b": None, "c": None})
    assert await blocked(db, spec, later, undecided("a", "b", "c")) == frozenset()
    await add_run(db, spec, 2, {"a": "running", "b": None, "c": None})  # now the previous one
    assert await blocked(db, spec, later, undecided("a", "b", "c")) == {"a"}


async def test_the_first_run_is_never_blocked(db):
    spec = past_dag()
    await add_dag(db, spec)
    first = await add_run(db, spec, 0, {"a": None})
    assert await blocked(db, spec, first, undecided("a")) == frozenset()


async def test_catchup_passes_over_manual_runs_and_no_catchup_does_not(db):
    for catchup, expected in ((True, frozenset()), (False, frozenset({"a"}))):
        spec = past_dag(catchup=catchup)
        await db.execute("DELETE FROM dag")
        await add_dag(db, spec)
        await add_run(db, spec, 0, {"a": "success"})
        await add_run(db, spec, 1, {"a": "failed"}, run_type="manual")
        later = await add_run(db, spec, 2, {"a": None})
        assert await blocked(db, spec, later, undecided("a")) == expected, catchup


async def test_a_task_new_in_the_dag_runs_but_one_missing_from_the_previous_run_waits(db):
    spec = past_dag(ignore_first_depends_on_past=True)
    await add_dag(db, spec)
    await add_run(db, spec, 0, {"c": "success"})
    second = await add_run(db, spec, 1, {"a": None, "c": None})
    assert await blocked(db, spec, second, undecided("a")) == frozenset()
    await db.execute("DELETE FROM dag_run")
    await add_run(db, spec, 0, {"a": "success"})
    await add_run(db, spec, 1, {"c": "success"})  # a was not in this one
    third = await add_run(db, spec, 2, {"a": None})
    assert await blocked(db, spec, third, undecided("a")) == {"a"}


async def test_mapped_instances_of_the_previous_run_all_count(db):
    spec = past_dag()
    await add_dag(db, spec)
    await add_run(db, spec, 0, {"a": ["success", "failed", "skipped"]})
    later = await add_run(db, spec, 1, {"a": None})
    assert await blocked(db, spec, later, undecided("a")) == {"a"}


async def test_wait_for_downstream_reads_the_downstreams_in_the_previous_run(db):
    spec = past_dag(wait_for_downstream=True)
    await add_dag(db, spec)
    await add_run(db, spec, 0, {"a": "success", "b": "running"})
    later = await add_run(db, spec, 1, {"a": None, "b": None})
    assert await blocked(db, spec, later, undecided("a")) == {"a"}
    await db.execute("UPDATE task_instance SET state = 'skipped' WHERE task_id = 'b'")
    assert await blocked(db, spec, later, undecided("a")) == frozenset()


async def test_no_query_when_no_depends_on_past_instance_is_undecided(db):
    spec = past_dag()
    run = {"id": -1, "logical_date": START}  # would read nothing anyway: no such run
    assert await blocked(db, spec, run, {"a": Counter({"success": 1})}) == frozenset()


async def test_a_run_that_settles_wakes_the_runs_after_it_once(db):
    spec = past_dag(wait_for_downstream=True)
    await add_dag(db, spec)
    first = await add_run(db, spec, 0, {"a": "success", "b": "running"})
    second = await add_run(db, spec, 1, {"a": None, "b": None})
    await add_run(db, spec, 2, {"a": None}, run_state="success")  # not active: never woken
    waker = PastWaker()
    counts = {"a": Counter({"success": 1}), "b": Counter({"running": 1})}
    assert await waker.after_pass(db, spec, first, counts, {}, [], False) == [second["id"]]
    assert await waker.after_pass(db, spec, first, counts, {}, [], False) == []  # nothing new
    counts = {"a": Counter({"success": 1}), "b": Counter({None: 1})}
    ended = {7: "skipped"}
    tis = [TIRow(7, "b", -1, None)]
    assert await waker.after_pass(db, spec, first, counts, ended, tis, False) == [second["id"]]
    assert await waker.after_pass(db, spec, first, counts, ended, tis, True) == [second["id"]]


async def test_dags_without_past_dependencies_never_wake_anything(db):
    with DAG("plain", start_date=START, schedule="@daily") as dag:
        work.override(task_id="a")()
    spec = spec_of(dag)
    assert watched(spec) == frozenset()
    run = {"id": 1, "logical_date": START}
    assert await PastWaker().after_pass(db, spec, run, {"a": Counter({"success": 1})}, {}, [],
                                        True) == []


async def test_a_mapped_task_waits_for_every_instance_of_its_previous_run(db):
    """Airflow's ``test_mapped_task_depends_on_past``: the second run's instances become
    schedulable only once both of the first run's have run."""
    with DAG("mapped_past", start_date=START, schedule="@daily") as dag:
        @task(depends_on_past=True)
        def print_value(value):
            print(value)

        print_value.expand_kwargs([{"value": i} for i in range(2)])
    spec = spec_of(dag)
    await add_dag(db, spec)
    await add_run(db, spec, 0, {"print_value": [None, None]})
    second = await add_run(db, spec, 1, {"print_value": [None, None]})
    counts = {"print_value": Counter({None: 2})}
    assert await blocked(db, spec, second, counts) == {"print_value"}
    rows = [TIRow(0, "print_value", 0, None), TIRow(1, "print_value", 1, None)]
    assert decide(spec, rows, NOW, past_blocked=frozenset({"print_value"})).queue == []
    await db.execute("UPDATE task_instance SET state = 'success' WHERE map_index = 0 AND run_pk <> $1",
                     second["id"])
    assert await blocked(db, spec, second, counts) == {"print_value"}
    await db.execute("UPDATE task_instance SET state = 'success' WHERE run_pk <> $1", second["id"])
    assert await blocked(db, spec, second, counts) == frozenset()
    assert decide(spec, rows, NOW).queue == [0, 1]


def test_a_retry_waits_on_its_past_too():
    """Airflow checks PrevDagrunDep before each try (an up_for_retry instance is
    schedulable again only when its dependencies are met)."""
    spec = past_dag()
    rows = [TIRow(0, "a", -1, "up_for_retry", 1, NOW), TIRow(1, "b", -1, None)]
    assert decide(spec, rows, NOW, past_blocked=frozenset({"a"})).queue == []
    assert decide(spec, rows, NOW).queue == [0]


async def test_an_instance_up_for_retry_has_its_past_read(db):
    spec = past_dag()
    await add_dag(db, spec)
    await add_run(db, spec, 0, {"a": "running"})
    later = await add_run(db, spec, 1, {"a": "up_for_retry"})
    assert await blocked(db, spec, later, {"a": Counter({"up_for_retry": 1})}) == {"a"}
