"""Trigger-rule decisions: pure functions from upstream counts to a verdict.

Reproduces Airflow 3's ``TriggerRuleDep`` as the scheduler runs it
(``flag_upstream_failed=True``): when a rule can no longer pass, the verdict is the
state to *set* on the task instance at once (``skipped``, ``upstream_failed`` or
``removed``); otherwise it is ``run`` or ``wait``. A state-setting verdict wins over a
passing one, because Airflow writes the state before it checks whether the rule
passes, and a TI in a finished state is never queued.

Not covered here (callers' concerns): ``wait_for_past_depends_before_skipping``
(defer a ``skipped`` verdict until past depends are met; Airflow's scheduler does not
set it), which setups count as a task's direct or indirect ones, and a teardown's wait
for the in-scope tasks between its setups and itself (``scheduler.setups`` and
``scheduler.decide``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from shared.trigger_rule import TriggerRule as TR

__all__ = [
    "FINISHED_STATES",
    "UpstreamStates",
    "Verdict",
    "combine",
    "count_states",
    "evaluate",
    "evaluate_indirect_setups",
]

#: Upstream TI states that count as finished; anything else (None, running, queued,
#: scheduled, deferred, up_for_retry, ...) is unfinished.
FINISHED_STATES = frozenset({"success", "skipped", "failed", "upstream_failed", "removed"})


@dataclass(frozen=True, slots=True)
class UpstreamStates:
    """Counts of *finished* upstream TIs, plus how many are expected.

    ``upstream`` is the number of direct upstream tasks, or, when any upstream is
    mapped, the number of upstream TIs (a still-unexpanded ``-1`` TI counts as one).
    ``setup_*`` count direct upstream *setup* TIs only; they are also included in
    the main counts, as in Airflow.
    """

    upstream: int
    success: int = 0
    skipped: int = 0
    failed: int = 0
    upstream_failed: int = 0
    removed: int = 0
    setup_success: int = 0
    setup_total: int = 0
    setup_skipped: int = 0

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if getattr(self, name) < 0:
                raise ValueError(f"UpstreamStates.{name} must be >= 0, got {getattr(self, name)}")

    def __add__(self, other: UpstreamStates) -> UpstreamStates:
        """Both sets of upstreams together (e.g. a whole upstream plus one index of another)."""
        return UpstreamStates(*(getattr(self, n) + getattr(other, n) for n in self.__slots__))

    @property
    def done(self) -> int:
        """Finished upstream TIs, in any finished state."""
        return self.success + self.skipped + self.failed + self.upstream_failed + self.removed

    @property
    def upstream_done(self) -> bool:
        """Every expected upstream TI has finished."""
        return self.done >= self.upstream


class Verdict(str, Enum):  # noqa: UP042 - same shape as TriggerRule
    """Outcome of one evaluation; the last three are TI states to set now."""

    RUN = "run"
    WAIT = "wait"
    SKIPPED = "skipped"
    UPSTREAM_FAILED = "upstream_failed"
    REMOVED = "removed"

    @property
    def sets_state(self) -> bool:
        """True when the verdict is a terminal state to write on the TI."""
        return self not in (Verdict.RUN, Verdict.WAIT)

    def __str__(self) -> str:
        return self.value


def _coerce_rule(rule: TR | str) -> TR:
    try:
        return TR(rule)
    except ValueError:
        raise ValueError(f"unknown trigger rule {rule!r}") from None


def evaluate(rule: TR | str, up: UpstreamStates, *, map_index: int = -1) -> Verdict:
    """Decide a TI's fate from its direct upstreams' counts.

    ``always`` and a TI with no upstreams run without looking at anything. The
    ``one_*`` rules run as soon as one qualifying upstream finished, without waiting
    for the rest. Raises ``ValueError`` for an unknown rule.
    """
    rule = _coerce_rule(rule)
    if up.upstream == 0 or rule is TR.ALWAYS:
        return Verdict.RUN
    state = _state_to_set(rule, up, map_index)
    if state is not None:
        return state
    return Verdict.RUN if _passes(rule, up) else Verdict.WAIT


def _state_to_set(rule: TR, up: UpstreamStates, map_index: int) -> Verdict | None:
    """The state Airflow writes when ``rule`` can no longer pass, else None."""
    s, sk, f, uf, rm = up.success, up.skipped, up.failed, up.upstream_failed, up.removed
    done = up.upstream_done
    if rule is TR.ALL_SUCCESS:
        if f or uf:
            return Verdict.UPSTREAM_FAILED
        if sk:
            return Verdict.SKIPPED
        # Mapped TI past the (shrunk) upstream width: its upstream index was removed.
        if rm and s and map_index > -1 and map_index >= s:
            return Verdict.REMOVED
    elif rule is TR.ALL_FAILED:
        if s or sk:
            return Verdict.SKIPPED
    elif rule is TR.ONE_SUCCESS:
        if done and up.done == sk:
            return Verdict.SKIPPED
        if done and s <= 0:
            return Verdict.UPSTREAM_FAILED
    elif rule is TR.ONE_FAILED:
        if done and not (f or uf):
            return Verdict.SKIPPED
    elif rule is TR.ONE_DONE:
        # upstream_failed is not "done" for this rule.
        if done and not (f or s):
            return Verdict.SKIPPED
    elif rule is TR.NONE_FAILED:
        if f or uf:
            return Verdict.UPSTREAM_FAILED
    elif rule is TR.NONE_FAILED_MIN_ONE_SUCCESS:
        if f or uf:
            return Verdict.UPSTREAM_FAILED
        if sk == up.upstream:
            return Verdict.SKIPPED
        if done and s == 0:  # AF3: all done (e.g. skipped + removed) but nothing succeeded
            return Verdict.UPSTREAM_FAILED
    elif rule is TR.NONE_SKIPPED:
        if sk:
            return Verdict.SKIPPED
    elif rule is TR.ALL_SKIPPED:
        if s or f or uf:
            return Verdict.SKIPPED
    elif rule is TR.ALL_DONE_MIN_ONE_SUCCESS:
        if sk:
            return Verdict.SKIPPED
        if s + f + uf + rm >= up.upstream - sk and s == 0:
            return Verdict.UPSTREAM_FAILED
    elif rule is TR.ALL_DONE_SETUP_SUCCESS:
        if done and up.setup_total and up.setup_skipped >= up.setup_total:
            return Verdict.SKIPPED
        if done and up.setup_total and up.setup_success == 0:
            return Verdict.UPSTREAM_FAILED
    return None


def _passes(rule: TR, up: UpstreamStates) -> bool:
    """Whether ``rule`` is satisfied (AF3: removed upstreams never block)."""
    s, sk, f, uf, rm = up.success, up.skipped, up.failed, up.upstream_failed, up.removed
    n = up.upstream
    if rule is TR.ONE_SUCCESS:
        return s > 0
    if rule is TR.ONE_FAILED:
        return f + uf > 0
    if rule is TR.ONE_DONE:
        return s + f > 0
    if rule is TR.ALL_SUCCESS:
        return n - s - rm <= 0
    if rule is TR.ALL_FAILED:
        return n - f - uf - rm <= 0
    if rule is TR.ALL_DONE:
        return up.upstream_done
    if rule is TR.NONE_FAILED:
        return n - s - sk - rm <= 0
    if rule is TR.NONE_FAILED_MIN_ONE_SUCCESS:
        return n - s - sk - rm <= 0 and s > 0
    if rule is TR.NONE_SKIPPED:
        return up.upstream_done and sk == 0
    if rule is TR.ALL_SKIPPED:
        return n - sk <= 0
    if rule is TR.ALL_DONE_SETUP_SUCCESS:
        return up.upstream_done and not (up.setup_total and not up.setup_success)
    if rule is TR.ALL_DONE_MIN_ONE_SUCCESS:
        return sk == 0 and s + f + uf >= n - sk - rm and s > 0
    raise AssertionError(f"unhandled trigger rule {rule!r}")  # pragma: no cover


def evaluate_indirect_setups(up: UpstreamStates, *, map_index: int = -1) -> Verdict:
    """Check a non-teardown task's *indirect* upstream setups (Airflow's setup constraint).

    Every such setup must succeed; a failure sets ``upstream_failed`` and a skip sets
    ``skipped`` at once, without waiting for the other setups. ``up`` counts only the
    indirect setups (``upstream`` = how many are expected; 0 means none → run).
    Teardowns have no indirect setups and skip this check.
    """
    if up.upstream == 0:
        return Verdict.RUN
    if up.failed or up.upstream_failed:
        return Verdict.UPSTREAM_FAILED
    if up.skipped:
        return Verdict.SKIPPED
    if up.removed and up.success and map_index > -1 and map_index >= up.success:
        return Verdict.REMOVED
    non_successes = up.upstream - up.success - (up.removed if map_index > -1 else 0)
    return Verdict.RUN if non_successes <= 0 else Verdict.WAIT


def combine(setup_verdict: Verdict, direct_verdict: Verdict) -> Verdict:
    """Merge the indirect-setup verdict with the direct trigger-rule verdict.

    As in Airflow: a state set by the setup check wins; else a state set by the
    trigger rule; the TI runs only when both checks pass.
    """
    if setup_verdict.sets_state:
        return setup_verdict
    if direct_verdict.sets_state:
        return direct_verdict
    if setup_verdict is Verdict.RUN and direct_verdict is Verdict.RUN:
        return Verdict.RUN
    return Verdict.WAIT


def _state_str(state: object) -> object:
    return getattr(state, "value", state)


def count_states(
    states: Iterable[str | None],
    upstream: int,
    *,
    setup_states: Iterable[str | None] = (),
    setup_total: int = 0,
) -> UpstreamStates:
    """Tally finished states into :class:`UpstreamStates`; unfinished ones are ignored.

    ``states`` are all relevant upstream TIs' states (setups included);
    ``setup_states`` are those of the direct upstream setup TIs among them, and
    ``setup_total`` how many such setup TIs are expected. Enum states are accepted.
    """
    counts = dict.fromkeys(FINISHED_STATES, 0)
    for state in states:
        key = _state_str(state)
        if key in counts:
            counts[key] += 1
    setup_success = setup_skipped = 0
    for state in setup_states:
        key = _state_str(state)
        setup_success += key == "success"
        setup_skipped += key == "skipped"
    return UpstreamStates(
        upstream=upstream,
        success=counts["success"],
        skipped=counts["skipped"],
        failed=counts["failed"],
        upstream_failed=counts["upstream_failed"],
        removed=counts["removed"],
        setup_success=setup_success,
        setup_total=setup_total,
        setup_skipped=setup_skipped,
    )
