"""The scheduler's per-run decision, as a pure function."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from scheduler.decide import TIRow, decide
from shared.serialization import DagSpec

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def spec(edges: dict[str, list[str]], rules: dict[str, str] | None = None,
         empty: set[str] = frozenset()) -> DagSpec:
    tasks = []
    for tid in edges:
        down = [d for d, ups in edges.items() if tid in ups]
        tasks.append({"task_id": tid, "operator": "X", "upstream": edges[tid], "downstream": down,
                      "trigger_rule": (rules or {}).get(tid, "all_success"),
                      "is_empty": tid in empty})
    return DagSpec(dag_id="d", fileloc="f.py", tasks=tasks)


def tis(**states: str | None) -> list[TIRow]:
    return [TIRow(i, tid, -1, st) for i, (tid, st) in enumerate(states.items())]


def test_roots_are_queued_first():
    d = decide(spec({"a": [], "b": ["a"]}), tis(a=None, b=None), NOW)
    assert d.queue == [0] and d.end == {} and d.run_state is None


def test_downstream_queued_after_success_and_run_succeeds_at_the_end():
    s = spec({"a": [], "b": ["a"]})
    assert decide(s, tis(a="success", b=None), NOW).queue == [1]
    assert decide(s, tis(a="success", b="success"), NOW).run_state == "success"


def test_failure_cascades_as_upstream_failed_in_one_pass():
    d = decide(spec({"a": [], "b": ["a"], "c": ["b"]}), tis(a="failed", b=None, c=None), NOW)
    assert d.end == {1: "upstream_failed", 2: "upstream_failed"}
    assert d.run_state == "failed"


def test_skip_propagates_but_none_failed_runs():
    s = spec({"a": [], "b": ["a"], "c": ["b"]}, rules={"c": "none_failed"})
    d = decide(s, tis(a="skipped", b=None, c=None), NOW)
    assert d.end == {1: "skipped"} and d.queue == [2]


def test_empty_operator_succeeds_without_a_worker():
    d = decide(spec({"a": [], "b": ["a"]}, empty={"a", "b"}), tis(a=None, b=None), NOW)
    assert d.end == {0: "success", 1: "success"} and d.queue == [] and d.run_state == "success"


def test_retry_waits_for_its_time_then_queues():
    s = spec({"a": []})
    later = [TIRow(0, "a", -1, "up_for_retry", 1, NOW + timedelta(seconds=5))]
    d = decide(s, later, NOW)
    assert d.queue == [] and d.wake_at == NOW + timedelta(seconds=5) and d.run_state is None
    due = [TIRow(0, "a", -1, "up_for_retry", 1, NOW - timedelta(seconds=1))]
    assert decide(s, due, NOW).queue == [0]


def test_resumed_instance_is_queued_whatever_its_upstream():
    d = decide(spec({"a": [], "b": ["a"]}), tis(a="running", b="scheduled"), NOW)
    assert d.queue == [1]


def test_leaf_decides_run_state_not_inner_failures():
    s = spec({"a": [], "b": ["a"]}, rules={"b": "all_done"})
    assert decide(s, tis(a="failed", b="success"), NOW).run_state == "success"


def test_deadlock_is_detected():
    s = spec({"a": [], "b": ["a"]}, rules={"b": "all_skipped"})
    d = decide(s, tis(a="removed", b=None), NOW)
    assert d.run_state == "failed" and d.deadlocked


def test_queue_cap_queues_only_free_slots_and_holds_the_rest():
    s = spec({"a": [], "b": ["a"]})
    rows = [TIRow(i, "a", i, None) for i in range(100)] + [TIRow(100, "b", -1, None)]
    d = decide(s, rows, NOW, queue_cap=5)
    assert d.queue == [0, 1, 2, 3, 4] and d.held
    # the held instances count as about to run: no deadlock, nothing downstream moves
    assert (d.run_state, d.end) == (None, {})
    assert decide(s, rows, NOW, queue_cap=0).queue == []
    assert len(decide(s, rows, NOW).queue) == 100


def test_queue_cap_leaves_start_from_trigger_tasks_alone():
    plain = spec({"a": []})
    task = plain.tasks[0].model_copy(
        update={"start_trigger": {"trigger_cls": "x.T", "next_method": "done"}})
    s = plain.model_copy(update={"tasks": [task]})
    d = decide(s, [TIRow(i, "a", i, None) for i in range(10)], NOW, queue_cap=2)
    assert len(d.queue) == 10 and not d.held


def test_one_verdict_per_task_keeps_per_index_removed_upstreams():
    # a mapped upstream shrank to 2 successes + 1 removed: index 2 is removed, 0 and 1 run
    s = spec({"up": [], "down": ["up"]})
    rows = [TIRow(0, "up", 0, "success"), TIRow(1, "up", 1, "success"),
            TIRow(2, "up", 2, "removed")] + [TIRow(3 + i, "down", i, None) for i in range(3)]
    d = decide(s, rows, NOW)
    assert d.queue == [3, 4] and d.end == {5: "removed"}


def test_a_window_of_a_task_defers_judging_the_run_while_it_progresses():
    s = spec({"up": [], "down": ["up"]})
    window = [TIRow(0, "up", -1, "failed")] + [TIRow(1 + i, "down", i, None) for i in range(3)]
    counts = {"up": Counter(failed=1), "down": Counter({None: 10})}  # 7 more unread
    d = decide(s, window, NOW, counts=counts, truncated=frozenset({"down"}))
    assert d.end == {1: "upstream_failed", 2: "upstream_failed", 3: "upstream_failed"}
    assert d.run_state is None  # the unread ones are ended in the next passes
