"""The scheduler's per-run decision, as a pure function."""

from __future__ import annotations

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
