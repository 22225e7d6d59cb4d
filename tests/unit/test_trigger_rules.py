"""Trigger-rule decisions, checked against Airflow 3's TriggerRuleDep (AIRFLOW-REFERENCE §4.1)."""

from __future__ import annotations

import dataclasses
import itertools
from enum import Enum

import pytest

from shared.state.trigger_rules import (
    FINISHED_STATES,
    UpstreamStates,
    Verdict,
    combine,
    count_states,
    evaluate,
    evaluate_indirect_setups,
)
from shared.trigger_rule import TriggerRule as TR

RUN, WAIT = Verdict.RUN, Verdict.WAIT
SKIP, UF, REM = Verdict.SKIPPED, Verdict.UPSTREAM_FAILED, Verdict.REMOVED


def U(n: int, s=0, sk=0, f=0, uf=0, rm=0, *, st=0, ss=0, ssk=0) -> UpstreamStates:
    """n expected upstreams; s/sk/f/uf/rm finished counts; st/ss/ssk setup total/success/skipped."""
    return UpstreamStates(
        upstream=n,
        success=s,
        skipped=sk,
        failed=f,
        upstream_failed=uf,
        removed=rm,
        setup_total=st,
        setup_success=ss,
        setup_skipped=ssk,
    )


# (rule, counts, map_index, expected)
CASES: list[tuple[TR, UpstreamStates, int, Verdict]] = [
    # --- all_success -----------------------------------------------------------------
    (TR.ALL_SUCCESS, U(2), -1, WAIT),
    (TR.ALL_SUCCESS, U(2, s=1), -1, WAIT),
    (TR.ALL_SUCCESS, U(2, s=2), -1, RUN),
    (TR.ALL_SUCCESS, U(2, f=1), -1, UF),  # set at once, without waiting for the other
    (TR.ALL_SUCCESS, U(2, uf=1), -1, UF),
    (TR.ALL_SUCCESS, U(2, s=1, f=1), -1, UF),
    (TR.ALL_SUCCESS, U(2, sk=1, f=1), -1, UF),  # failure beats skip
    (TR.ALL_SUCCESS, U(2, sk=1), -1, SKIP),  # skip propagates at once
    (TR.ALL_SUCCESS, U(2, s=1, sk=1), -1, SKIP),
    (TR.ALL_SUCCESS, U(2, s=1, rm=1), -1, RUN),  # AF3: removed never blocks, even unmapped
    (TR.ALL_SUCCESS, U(2, rm=2), 0, RUN),  # no success -> no REMOVED branch
    (TR.ALL_SUCCESS, U(5, s=3, rm=2), 3, REM),  # Airflow test: success=3, removed=2, idx 3
    (TR.ALL_SUCCESS, U(5, s=3, rm=2), 4, REM),
    (TR.ALL_SUCCESS, U(5, s=3, rm=2), 2, RUN),
    (TR.ALL_SUCCESS, U(5, s=3, rm=2), 0, RUN),
    (TR.ALL_SUCCESS, U(5, s=3, rm=2), -1, RUN),  # unmapped TI is never REMOVED
    (TR.ALL_SUCCESS, U(5, s=2, rm=2), 3, REM),  # REMOVED does not wait for the rest
    (TR.ALL_SUCCESS, U(5, s=2, rm=2), 1, WAIT),
    (TR.ALL_SUCCESS, U(5, s=2, rm=2, f=1), 3, UF),  # failure beats REMOVED
    (TR.ALL_SUCCESS, U(5, s=2, rm=2, sk=1), 3, SKIP),  # skip beats REMOVED
    # --- all_failed ------------------------------------------------------------------
    (TR.ALL_FAILED, U(2), -1, WAIT),
    (TR.ALL_FAILED, U(2, f=1), -1, WAIT),
    (TR.ALL_FAILED, U(2, f=2), -1, RUN),
    (TR.ALL_FAILED, U(2, f=1, uf=1), -1, RUN),
    (TR.ALL_FAILED, U(2, uf=2), -1, RUN),
    (TR.ALL_FAILED, U(2, f=1, rm=1), -1, RUN),
    (TR.ALL_FAILED, U(2, s=1), -1, SKIP),  # at once
    (TR.ALL_FAILED, U(2, sk=1), -1, SKIP),
    (TR.ALL_FAILED, U(2, sk=1, f=1), -1, SKIP),
    # --- all_done --------------------------------------------------------------------
    (TR.ALL_DONE, U(3), -1, WAIT),
    (TR.ALL_DONE, U(3, s=1, f=1), -1, WAIT),
    (TR.ALL_DONE, U(3, f=3), -1, RUN),
    (TR.ALL_DONE, U(3, sk=3), -1, RUN),  # stops skip propagation
    (TR.ALL_DONE, U(3, uf=3), -1, RUN),
    (TR.ALL_DONE, U(3, rm=3), -1, RUN),
    (TR.ALL_DONE, U(5, s=1, sk=1, f=1, uf=1, rm=1), -1, RUN),
    # --- all_done_setup_success ------------------------------------------------------
    (TR.ALL_DONE_SETUP_SUCCESS, U(2, f=1), -1, WAIT),
    (TR.ALL_DONE_SETUP_SUCCESS, U(2, f=2), -1, RUN),  # no setups: plain all_done
    (TR.ALL_DONE_SETUP_SUCCESS, U(2, uf=1, sk=1), -1, RUN),
    (TR.ALL_DONE_SETUP_SUCCESS, U(3, s=1, f=2, st=1, ss=1), -1, RUN),
    (TR.ALL_DONE_SETUP_SUCCESS, U(3, s=1, f=1, st=1, ss=1), -1, WAIT),
    (TR.ALL_DONE_SETUP_SUCCESS, U(2, sk=1, f=1, st=1, ssk=1), -1, SKIP),
    (TR.ALL_DONE_SETUP_SUCCESS, U(3, sk=1, st=1, ssk=1), -1, WAIT),  # waits for upstream_done
    (TR.ALL_DONE_SETUP_SUCCESS, U(2, s=1, f=1, st=1), -1, UF),  # the setup is the failed one
    (TR.ALL_DONE_SETUP_SUCCESS, U(2, s=1, sk=1, st=2, ss=1, ssk=1), -1, RUN),
    (TR.ALL_DONE_SETUP_SUCCESS, U(2, f=1, sk=1, st=2, ssk=1), -1, UF),
    (TR.ALL_DONE_SETUP_SUCCESS, U(2, sk=2, st=2, ssk=2), -1, SKIP),
    # --- one_success -----------------------------------------------------------------
    (TR.ONE_SUCCESS, U(3), -1, WAIT),
    (TR.ONE_SUCCESS, U(3, s=1), -1, RUN),  # does not wait for the others
    (TR.ONE_SUCCESS, U(3, s=1, f=2), -1, RUN),
    (TR.ONE_SUCCESS, U(3, f=2), -1, WAIT),
    (TR.ONE_SUCCESS, U(3, f=3), -1, UF),
    (TR.ONE_SUCCESS, U(3, sk=1, f=1, uf=1), -1, UF),
    (TR.ONE_SUCCESS, U(3, sk=3), -1, SKIP),  # all skipped -> skipped
    (TR.ONE_SUCCESS, U(3, sk=2), -1, WAIT),
    (TR.ONE_SUCCESS, U(3, sk=2, f=1), -1, UF),
    (TR.ONE_SUCCESS, U(3, sk=2, rm=1), -1, UF),  # done != skipped
    # --- one_failed ------------------------------------------------------------------
    (TR.ONE_FAILED, U(3), -1, WAIT),
    (TR.ONE_FAILED, U(3, f=1), -1, RUN),  # at once
    (TR.ONE_FAILED, U(3, uf=1), -1, RUN),
    (TR.ONE_FAILED, U(3, s=2, f=1), -1, RUN),
    (TR.ONE_FAILED, U(3, s=2), -1, WAIT),
    (TR.ONE_FAILED, U(3, s=3), -1, SKIP),
    (TR.ONE_FAILED, U(3, s=1, sk=1, rm=1), -1, SKIP),
    # --- one_done --------------------------------------------------------------------
    (TR.ONE_DONE, U(3), -1, WAIT),
    (TR.ONE_DONE, U(3, s=1), -1, RUN),
    (TR.ONE_DONE, U(3, f=1), -1, RUN),
    (TR.ONE_DONE, U(3, uf=1), -1, WAIT),  # upstream_failed is not "done" here
    (TR.ONE_DONE, U(3, uf=3), -1, SKIP),
    (TR.ONE_DONE, U(3, sk=3), -1, SKIP),
    (TR.ONE_DONE, U(3, sk=1, uf=1, rm=1), -1, SKIP),
    (TR.ONE_DONE, U(3, sk=1, uf=1, f=1), -1, RUN),
    # --- none_failed -----------------------------------------------------------------
    (TR.NONE_FAILED, U(2), -1, WAIT),
    (TR.NONE_FAILED, U(2, s=1), -1, WAIT),
    (TR.NONE_FAILED, U(2, s=2), -1, RUN),
    (TR.NONE_FAILED, U(2, s=1, sk=1), -1, RUN),
    (TR.NONE_FAILED, U(2, sk=2), -1, RUN),  # every upstream skipped -> runs
    (TR.NONE_FAILED, U(2, sk=1, rm=1), -1, RUN),
    (TR.NONE_FAILED, U(2, f=1), -1, UF),  # at once
    (TR.NONE_FAILED, U(2, uf=1), -1, UF),
    (TR.NONE_FAILED, U(2, sk=1, uf=1), -1, UF),
    # --- none_failed_min_one_success -------------------------------------------------
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, U(2), -1, WAIT),
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, U(2, s=1), -1, WAIT),
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, U(2, s=2), -1, RUN),
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, U(2, s=1, sk=1), -1, RUN),
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, U(2, s=1, rm=1), -1, RUN),
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, U(2, sk=1), -1, WAIT),
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, U(2, sk=2), -1, SKIP),
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, U(2, f=1), -1, UF),
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, U(2, uf=1), -1, UF),
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, U(2, sk=1, rm=1), -1, UF),  # AF3: done, no success
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, U(2, rm=2), -1, UF),
    # --- none_skipped ----------------------------------------------------------------
    (TR.NONE_SKIPPED, U(2), -1, WAIT),
    (TR.NONE_SKIPPED, U(2, f=1), -1, WAIT),
    (TR.NONE_SKIPPED, U(2, s=2), -1, RUN),
    (TR.NONE_SKIPPED, U(2, f=1, uf=1), -1, RUN),  # failures are fine
    (TR.NONE_SKIPPED, U(2, s=1, rm=1), -1, RUN),
    (TR.NONE_SKIPPED, U(2, sk=1), -1, SKIP),  # at once
    (TR.NONE_SKIPPED, U(2, sk=1, f=1), -1, SKIP),
    # --- all_skipped -----------------------------------------------------------------
    (TR.ALL_SKIPPED, U(2), -1, WAIT),
    (TR.ALL_SKIPPED, U(2, sk=1), -1, WAIT),
    (TR.ALL_SKIPPED, U(2, sk=2), -1, RUN),
    (TR.ALL_SKIPPED, U(2, s=1), -1, SKIP),  # at once
    (TR.ALL_SKIPPED, U(2, f=1), -1, SKIP),
    (TR.ALL_SKIPPED, U(2, uf=1), -1, SKIP),
    (TR.ALL_SKIPPED, U(2, sk=1, rm=1), -1, WAIT),  # Airflow: removed never counts as skipped
    # --- always ----------------------------------------------------------------------
    (TR.ALWAYS, U(3), -1, RUN),  # before any upstream ran
    (TR.ALWAYS, U(3, f=3), -1, RUN),
    (TR.ALWAYS, U(3, sk=3), -1, RUN),
    (TR.ALWAYS, U(3, uf=1), 2, RUN),
    # --- all_done_min_one_success (AF3) ----------------------------------------------
    (TR.ALL_DONE_MIN_ONE_SUCCESS, U(3), -1, WAIT),
    (TR.ALL_DONE_MIN_ONE_SUCCESS, U(3, s=1), -1, WAIT),
    (TR.ALL_DONE_MIN_ONE_SUCCESS, U(3, f=2), -1, WAIT),
    (TR.ALL_DONE_MIN_ONE_SUCCESS, U(3, s=3), -1, RUN),
    (TR.ALL_DONE_MIN_ONE_SUCCESS, U(3, s=1, f=2), -1, RUN),
    (TR.ALL_DONE_MIN_ONE_SUCCESS, U(3, s=1, uf=1, rm=1), -1, RUN),
    (TR.ALL_DONE_MIN_ONE_SUCCESS, U(3, sk=1), -1, SKIP),  # at once
    (TR.ALL_DONE_MIN_ONE_SUCCESS, U(3, s=2, sk=1), -1, SKIP),
    (TR.ALL_DONE_MIN_ONE_SUCCESS, U(3, f=3), -1, UF),
    (TR.ALL_DONE_MIN_ONE_SUCCESS, U(3, f=1, uf=1, rm=1), -1, UF),
]


def _case_id(case: tuple[TR, UpstreamStates, int, Verdict]) -> str:
    rule, up, mi, expected = case
    fields = ",".join(
        f"{f.name}={getattr(up, f.name)}"
        for f in dataclasses.fields(up)
        if f.name == "upstream" or getattr(up, f.name)
    )
    return f"{rule.value}[{fields}]@{mi}->{expected.value}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_evaluate_table(case: tuple[TR, UpstreamStates, int, Verdict]) -> None:
    rule, up, map_index, expected = case
    assert evaluate(rule, up, map_index=map_index) is expected
    # the string form of the rule behaves identically
    assert evaluate(rule.value, up, map_index=map_index) is expected


def test_table_covers_every_rule_and_verdict() -> None:
    assert {c[0] for c in CASES} == set(TR)
    assert {c[3] for c in CASES} == set(Verdict)


@pytest.mark.parametrize("rule", list(TR), ids=lambda r: r.value)
@pytest.mark.parametrize("map_index", [-1, 0, 3])
def test_zero_upstreams_runs(rule: TR, map_index: int) -> None:
    assert evaluate(rule, UpstreamStates(upstream=0), map_index=map_index) is RUN


@pytest.mark.parametrize("bad", ["nope", "ALL_SUCCESS", "", "all-success"])
def test_unknown_rule_raises_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match=repr(bad)):
        evaluate(bad, U(1))


def test_unknown_rule_raises_even_with_zero_upstreams() -> None:
    with pytest.raises(ValueError, match="bogus"):
        evaluate("bogus", U(0))


# --- UpstreamStates ------------------------------------------------------------------


def test_done_and_upstream_done() -> None:
    up = U(6, s=1, sk=1, f=1, uf=1, rm=1)
    assert up.done == 5
    assert not up.upstream_done
    assert U(5, s=1, sk=1, f=1, uf=1, rm=1).upstream_done


@pytest.mark.parametrize(
    "field",
    [f.name for f in dataclasses.fields(UpstreamStates)],
)
def test_negative_counts_rejected(field: str) -> None:
    kwargs = {"upstream": 1, field: -1}
    with pytest.raises(ValueError, match=field):
        UpstreamStates(**kwargs)


def test_upstream_states_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        U(1).success = 1  # type: ignore[misc]


def test_verdict_values_and_sets_state() -> None:
    assert [v.value for v in Verdict] == ["run", "wait", "skipped", "upstream_failed", "removed"]
    assert {v for v in Verdict if v.sets_state} == {SKIP, UF, REM}
    assert str(UF) == "upstream_failed"


# --- count_states --------------------------------------------------------------------


class _TIState(str, Enum):  # noqa: UP042 - shaped like Airflow's TaskInstanceState
    SUCCESS = "success"
    FAILED = "failed"
    RUNNING = "running"


@pytest.mark.parametrize(
    ("states", "upstream", "expected"),
    [
        ([], 0, U(0)),
        ([], 3, U(3)),
        ([None, "running", "queued", "scheduled", "deferred", "up_for_retry"], 6, U(6)),
        (["up_for_reschedule", "restarting", "none", "SUCCESS", "weird"], 5, U(5)),
        (["success", "success", "skipped"], 3, U(3, s=2, sk=1)),
        (
            ["success", "skipped", "failed", "upstream_failed", "removed", None, "running"],
            7,
            U(7, s=1, sk=1, f=1, uf=1, rm=1),
        ),
        ([_TIState.SUCCESS, _TIState.FAILED, _TIState.RUNNING], 3, U(3, s=1, f=1)),
        (iter(["failed", "failed"]), 2, U(2, f=2)),  # any iterable
    ],
)
def test_count_states(states, upstream: int, expected: UpstreamStates) -> None:
    assert count_states(states, upstream) == expected


def test_count_states_setups() -> None:
    up = count_states(
        ["success", "skipped", "failed", "success"],
        4,
        setup_states=["success", "skipped", "running", None],
        setup_total=4,
    )
    assert up == U(4, s=2, sk=1, f=1, st=4, ss=1, ssk=1)


def test_finished_states() -> None:
    assert FINISHED_STATES == {"success", "skipped", "failed", "upstream_failed", "removed"}


def test_count_then_evaluate_mapped_upstream_waits_for_all_instances() -> None:
    # a 5-way mapped upstream: 4 done, 1 still running -> all_success waits
    up = count_states(["success"] * 4 + ["running"], 5)
    assert evaluate(TR.ALL_SUCCESS, up) is WAIT
    assert evaluate(TR.ALL_SUCCESS, count_states(["success"] * 5, 5)) is RUN


# --- indirect setups and combine -----------------------------------------------------


@pytest.mark.parametrize(
    ("up", "map_index", "expected"),
    [
        (U(0), -1, RUN),
        (U(2), -1, WAIT),
        (U(2, s=1), -1, WAIT),
        (U(2, s=2), -1, RUN),
        (U(2, f=1), -1, UF),  # at once
        (U(2, uf=1), -1, UF),
        (U(2, sk=1), -1, SKIP),
        (U(2, sk=1, f=1), -1, UF),
        (U(5, s=3, rm=2), 3, REM),
        (U(5, s=3, rm=2), 1, RUN),
        (U(5, s=3, rm=2), -1, WAIT),  # the setup check subtracts removed only when mapped
    ],
)
def test_evaluate_indirect_setups(up: UpstreamStates, map_index: int, expected: Verdict) -> None:
    assert evaluate_indirect_setups(up, map_index=map_index) is expected


@pytest.mark.parametrize(
    ("setup", "direct", "expected"),
    [
        (RUN, RUN, RUN),
        (RUN, WAIT, WAIT),
        (WAIT, RUN, WAIT),
        (WAIT, WAIT, WAIT),
        (WAIT, SKIP, SKIP),
        (RUN, UF, UF),
        (UF, SKIP, UF),
        (SKIP, RUN, SKIP),
        (REM, UF, REM),
    ],
)
def test_combine(setup: Verdict, direct: Verdict, expected: Verdict) -> None:
    assert combine(setup, direct) is expected


# --- TriggerRule enum ----------------------------------------------------------------


def test_trigger_rule_values() -> None:
    assert len(TR) == 13
    for member in TR:
        assert member.value == member.name.lower()
        assert str(member) == member.value
        assert member == member.value
    assert TR("none_failed_min_one_success") is TR.NONE_FAILED_MIN_ONE_SUCCESS


def test_trigger_rule_is_valid_and_all_triggers() -> None:
    assert TR.all_triggers() == {m.value for m in TR}
    assert all(type(v) is str for v in TR.all_triggers())
    assert TR.is_valid("all_done")
    assert TR.is_valid(TR.ALL_DONE_MIN_ONE_SUCCESS)
    for bad in ("ALL_DONE", "", "dummy", None, 1, ["all_done"]):
        assert not TR.is_valid(bad)


# --- brute force over all small count combinations -----------------------------------

MAX_N = 4
MAP_INDEXES = (-1, 0, 1, 2, 3, 4)
NEEDS_ALL_DONE = {
    TR.ALL_SUCCESS,
    TR.ALL_FAILED,
    TR.ALL_DONE,
    TR.ALL_DONE_SETUP_SUCCESS,
    TR.NONE_FAILED,
    TR.NONE_FAILED_MIN_ONE_SUCCESS,
    TR.NONE_SKIPPED,
    TR.ALL_SKIPPED,
    TR.ALL_DONE_MIN_ONE_SUCCESS,
}
COUNT_FIELDS = ("success", "skipped", "failed", "upstream_failed", "removed")


def _all_states() -> list[UpstreamStates]:
    out = []
    for n in range(MAX_N + 1):
        for s, sk, f, uf, rm in itertools.product(range(n + 1), repeat=5):
            if s + sk + f + uf + rm > n:
                continue
            for st in range(min(n, 2) + 1):
                for ss in range(min(s, st) + 1):
                    for ssk in range(min(sk, st - ss) + 1):
                        out.append(U(n, s, sk, f, uf, rm, st=st, ss=ss, ssk=ssk))
    return out


ALL_STATES = _all_states()


def _progressions(up: UpstreamStates) -> list[UpstreamStates]:
    """Every way one still-unfinished upstream can finish."""
    if up.upstream_done:
        return []
    return [dataclasses.replace(up, **{f: getattr(up, f) + 1}) for f in COUNT_FIELDS]


def test_brute_force_space_is_nontrivial() -> None:
    assert len(ALL_STATES) > 500


@pytest.mark.parametrize("rule", list(TR), ids=lambda r: r.value)
def test_brute_force_invariants(rule: TR) -> None:
    for up, mi in itertools.product(ALL_STATES, MAP_INDEXES):
        v = evaluate(rule, up, map_index=mi)
        ctx = (rule.value, up, mi, v)
        assert isinstance(v, Verdict), ctx
        if up.upstream == 0 or rule is TR.ALWAYS:
            assert v is RUN, ctx
            continue
        # never run while a needed upstream is unfinished
        if rule in NEEDS_ALL_DONE and v is RUN:
            assert up.upstream_done, ctx
        # the one_* rules fire on the first qualifying upstream, without waiting
        if rule is TR.ONE_SUCCESS:
            assert (v is RUN) == (up.success >= 1), ctx
        if rule is TR.ONE_FAILED:
            assert (v is RUN) == (up.failed + up.upstream_failed >= 1), ctx
        if rule is TR.ONE_DONE:
            assert (v is RUN) == (up.success + up.failed >= 1), ctx
        if rule is TR.ALL_DONE:
            assert v is (RUN if up.upstream_done else WAIT), ctx
        # REMOVED only for a mapped all_success TI beyond the successful width
        if v is REM:
            assert rule is TR.ALL_SUCCESS and up.removed and 0 <= up.success <= mi, ctx
        # once everything finished there is a decision; the one exception is Airflow's
        # all_skipped with a removed upstream, which never passes (the run deadlocks)
        if up.upstream_done and v is WAIT:
            assert rule is TR.ALL_SKIPPED and up.removed and not up.failed, ctx
        # a skip on any upstream decides skip-propagating rules at once
        if up.skipped and rule in (TR.NONE_SKIPPED, TR.ALL_DONE_MIN_ONE_SUCCESS):
            assert v is SKIP, ctx
        if up.skipped and rule is TR.ALL_SUCCESS:
            assert v is (UF if up.failed + up.upstream_failed else SKIP), ctx
        # a failure decides the failure-intolerant rules at once
        if up.failed + up.upstream_failed and rule in (
            TR.ALL_SUCCESS,
            TR.NONE_FAILED,
            TR.NONE_FAILED_MIN_ONE_SUCCESS,
        ):
            assert v is UF, ctx
        # none_failed runs when every upstream was skipped
        if rule is TR.NONE_FAILED and up.skipped == up.upstream:
            assert v is RUN, ctx


@pytest.mark.parametrize("rule", list(TR), ids=lambda r: r.value)
def test_brute_force_decisions_are_stable(rule: TR) -> None:
    """Once SKIPPED/UPSTREAM_FAILED or RUN, finishing more upstreams never reverts to WAIT."""
    for up, mi in itertools.product(ALL_STATES, MAP_INDEXES):
        v = evaluate(rule, up, map_index=mi)
        if v in (WAIT, REM):
            continue
        for nxt in _progressions(up):
            w = evaluate(rule, nxt, map_index=mi)
            ctx = (rule.value, up, mi, v, nxt, w)
            if v is RUN:
                assert w is RUN, ctx
            else:
                assert w in (SKIP, UF), ctx


@pytest.mark.parametrize("rule", list(TR), ids=lambda r: r.value)
def test_brute_force_count_states_round_trip(rule: TR) -> None:
    """Tallying a concrete list of states gives the same verdict as the counts."""
    for up in ALL_STATES[::7]:
        states = (
            ["success"] * up.success
            + ["skipped"] * up.skipped
            + ["failed"] * up.failed
            + ["upstream_failed"] * up.upstream_failed
            + ["removed"] * up.removed
            + ["running"] * (up.upstream - up.done)
        )
        setups = ["success"] * up.setup_success + ["skipped"] * up.setup_skipped
        counted = count_states(states, up.upstream, setup_states=setups, setup_total=up.setup_total)
        assert counted == up
        assert evaluate(rule, counted) is evaluate(rule, up)
