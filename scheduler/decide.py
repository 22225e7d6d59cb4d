"""What to do next in one DAG run: a pure function over plain data.

Given the run's per-task state counts, its schedulable instances and the
DAG's structure, decide which instances to queue, which to end without
running (upstream_failed, skipped, removed, or success for an empty
operator), when to wake up for a retry, and whether the run is over. No I/O:
the caller reads the counts and rows and writes the outcome in one
transaction. Cost is proportional to the schedulable instances, not to the
size of the run, so a 10,000-instance mapped task is cheap to re-decide.

Inside a mapped task group, instance *i* depends only on instance *i* of its
upstreams in the same group (or on their unexpanded placeholder), and on
every instance of its other upstreams; its trigger rule is evaluated on that.
The caller supplies those per-index states (``group_lookups`` says which).

Setups and teardowns follow Airflow 3.3 (``scheduler.setups`` says which
tasks each rule reads): a work task also waits for its indirect setups to
succeed, a teardown (``all_done_setup_success``) for the tasks in scope
between its setups and itself, and a finished run is judged on its leaves
less the teardowns that do not ``on_failure_fail_dagrun``. A task that
``depends_on_past`` and whose previous run is not settled (``past_blocked``,
from ``scheduler.past``) waits even when its trigger rule passes; its rule
may still end it (``skipped``, ``upstream_failed``), as in Airflow.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from scheduler.expansion import RunFacts, mapped_producers, run_length
from scheduler.setups import effective_leaves, structure
from shared.serialization import DagSpec, TaskSpec
from shared.state.trigger_rules import (
    FINISHED_STATES,
    UpstreamStates,
    Verdict,
    combine,
    evaluate,
    evaluate_indirect_setups,
)
from shared.state.trigger_rules import count_states as tally

ACTIVE = frozenset({"scheduled", "queued", "running", "deferred", "up_for_retry"})
SCHEDULABLE = frozenset({None, "scheduled", "up_for_retry"})

StateCounts = dict[str, Counter]  # task_id -> Counter(state -> instances)
GroupStates = dict[tuple[str, int], str | None]  # (in-group task_id, map_index) -> state
MISSING = object()  # no such instance (expanded away, or never created)


@dataclass(slots=True)
class TIRow:
    id: int
    task_id: str
    map_index: int
    state: str | None
    try_number: int = 0
    next_retry_at: datetime | None = None


@dataclass
class RunDecision:
    queue: list[int] = field(default_factory=list)
    end: dict[int, str] = field(default_factory=dict)
    run_state: str | None = None
    deadlocked: bool = False
    wake_at: datetime | None = None
    expand: dict[int, int] = field(default_factory=dict)  # placeholder id -> instance count
    held: bool = False  # runnable instances left out of ``queue`` by ``queue_cap``


def count_states(tis: list[TIRow]) -> StateCounts:
    counts: StateCounts = defaultdict(Counter)
    for ti in tis:
        counts[ti.task_id][ti.state] += 1
    return counts


def topological_order(dag: DagSpec) -> list[str]:
    cached = dag.__dict__.get("_topo")
    if cached is not None:
        return cached
    indegree = {t.task_id: len(t.upstream) for t in dag.tasks}
    ready = [t.task_id for t in dag.tasks if not t.upstream]
    order: list[str] = []
    while ready:
        tid = ready.pop(0)
        order.append(tid)
        for d in dag.task(tid).downstream:
            indegree[d] -= 1
            if indegree[d] == 0:
                ready.append(d)
    object.__setattr__(dag, "__dict__", {**dag.__dict__, "_topo": order})
    return order


def _upstream_states(upstreams: list[str], counts: StateCounts,
                     setups: frozenset[str] = frozenset()) -> UpstreamStates:
    """Every instance of each of ``upstreams``; ``setups`` (among them) also counted apart."""
    total: Counter = Counter()
    setup: Counter = Counter()
    upstream = 0
    for up in upstreams:
        mine = counts.get(up, Counter())
        upstream += sum(mine.values())
        total.update(mine)
        if up in setups:
            setup.update(mine)
    return UpstreamStates(upstream=upstream, success=total["success"], skipped=total["skipped"],
                          failed=total["failed"], upstream_failed=total["upstream_failed"],
                          removed=total["removed"], setup_success=setup["success"],
                          setup_total=sum(setup.values()), setup_skipped=setup["skipped"])


def group_edges(dag: DagSpec) -> dict[str, tuple[list[str], list[str]]]:
    """Per task in a mapped group: (upstreams in the same group, other upstreams)."""
    cached = dag.__dict__.get("_group_edges")
    if cached is not None:
        return cached
    edges = {}
    for t in dag.tasks:
        if t.mapped_group is None:
            continue
        inside = [u for u in t.upstream if dag.task(u).mapped_group == t.mapped_group]
        edges[t.task_id] = (inside, [u for u in t.upstream if u not in inside])
    object.__setattr__(dag, "__dict__", {**dag.__dict__, "_group_edges": edges})
    return edges


def group_lookups(dag: DagSpec, tis: list[TIRow]) -> list[tuple[str, int]]:
    """The (task_id, map_index) states ``decide`` needs for the undecided in-group instances.

    For each, its in-group upstreams at its own map index and at ``-1`` (a
    placeholder not expanded yet). Proportional to those instances.
    """
    edges = group_edges(dag)
    wanted: set[tuple[str, int]] = set()
    for ti in tis:
        if ti.state is None and ti.task_id in edges:
            for up in edges[ti.task_id][0] + _group_extra(dag, ti.task_id)[0]:
                wanted.add((up, -1))
                if ti.map_index >= 0:
                    wanted.add((up, ti.map_index))
    return sorted(wanted)


def _group_extra(dag: DagSpec, task_id: str) -> tuple[list[str], list[str]]:
    """The setups and teardown scope ``task_id`` reads: (in its mapped group, elsewhere)."""
    extra = structure(dag).extra(task_id)
    if not extra:
        return [], []
    group = dag.task(task_id).mapped_group
    inside = [t for t in extra if group is not None and dag.task(t).mapped_group == group]
    return inside, [t for t in extra if t not in inside]


def in_group_states(inside: list[str], map_index: int, state_at: Callable[[str, int], object],
                    expanding: set[str]) -> list | None:
    """States of the in-group upstreams that instance ``map_index`` depends on.

    Instance *i* reads each upstream's instance *i*, or its placeholder while
    that one is not expanded. A placeholder (``-1``) ignores upstreams already
    expanded or expanding: it expands with the group and each instance is
    then judged per index. ``None`` means "expand, no rule to evaluate yet".
    """
    states = []
    for up in inside:
        st = state_at(up, map_index) if map_index >= 0 else MISSING
        if st is MISSING:
            st = state_at(up, -1)
            if st is MISSING or up in expanding:
                continue
        states.append(st)
    if map_index < 0 and inside and not states:
        return None
    return states


def _placeholder_verdict(dag: DagSpec, spec: TaskSpec, verdict: Verdict, counts: StateCounts,
                         facts: RunFacts) -> tuple[Verdict, int | None]:
    """A failed producer fails the mapped task whatever its rule; RUN needs a known length.

    A mapped producer is not failed by some of its instances failing: its output
    is the values the others returned, so the trigger rule decides (under
    ``all_done`` the task expands over the surviving values, as in Airflow).
    It is failed when it never expanded: its ``-1`` instance failed or is
    ``upstream_failed`` (Airflow's ``MappedTaskUpstreamDep``).
    """
    for producer in mapped_producers(spec.mapped):
        if dag.task(producer).mapped is not None:
            if producer in facts.failed_unexpanded:
                return Verdict.UPSTREAM_FAILED, None
            continue
        mine = counts.get(producer, Counter())
        if mine["failed"] or mine["upstream_failed"]:
            return Verdict.UPSTREAM_FAILED, None
    if verdict is not Verdict.RUN:
        return verdict, None
    length = run_length(spec, dag, facts, counts)
    if length is None:
        if _all_finished(mapped_producers(spec.mapped), counts):
            # a producer ended without recording a length (e.g. from the triggerer,
            # TaskSuccessEvent): it never will, so this task cannot expand (as Airflow)
            return Verdict.UPSTREAM_FAILED, None
        return Verdict.WAIT, None
    return (Verdict.SKIPPED, 0) if length == 0 else (Verdict.RUN, length)


def _all_finished(task_ids: set[str], counts: StateCounts) -> bool:
    return all(n == 0 or s in FINISHED_STATES
               for t in task_ids for s, n in counts.get(t, Counter()).items())


def decide(dag: DagSpec, tis: list[TIRow], now: datetime, facts: RunFacts | None = None,
           counts: StateCounts | None = None, group_states: GroupStates | None = None,
           queue_cap: int | None = None, truncated: frozenset[str] = frozenset(),
           past_blocked: frozenset[str] = frozenset()) -> RunDecision:
    """Queue what may run, end what never will, and say whether the run is over.

    ``tis`` are the run's schedulable instances (others are ignored);
    ``counts`` the run's instances per task and state, and ``group_states``
    the states ``group_lookups`` asked for (both derived from ``tis`` when
    omitted, for callers holding every row). A mapped task's ``-1``
    placeholder whose dependencies are met is reported in ``expand`` with its
    length; the caller creates the instances and decides again.

    ``queue_cap`` bounds the instances put in ``queue`` (the worker slots the
    DAG has free): the others that could run are counted as queued for this
    pass, so nothing downstream moves past them, and ``held`` is set. Tasks
    that start in the triggerer take no worker slot and are not capped. A
    task's verdict is computed once when it cannot differ between its
    instances, so a pass over 10,000 waiting instances stays cheap.

    ``truncated`` names tasks of which ``tis`` holds only a window (more of
    their instances wait unread): while the pass makes progress the run cannot
    be over, so its end is judged only when nothing moved (then the unread
    instances, which share the verdict of the ones read, are as stuck).

    ``past_blocked`` names the ``depends_on_past`` tasks whose previous run
    does not let them run yet: their instances wait (and a run waiting on
    them is not deadlocked, as in Airflow).
    """
    out = RunDecision()
    budget = [queue_cap]

    def takes_slot(spec: TaskSpec) -> bool:
        if budget[0] is None or spec.start_trigger is not None:
            return True
        if budget[0] > 0:
            budget[0] -= 1
            return True
        out.held = True
        return False

    def queue(ti: TIRow, spec: TaskSpec) -> None:
        if takes_slot(spec):
            out.queue.append(ti.id)
        set_state(ti, "queued")

    facts = facts or RunFacts()
    facts.failed_unexpanded |= {ti.task_id for ti in tis if ti.map_index < 0
                                and ti.state in ("failed", "upstream_failed")}
    counts = count_states(tis) if counts is None else counts
    edges = group_edges(dag)
    if group_states is None:
        group_states = {(ti.task_id, ti.map_index): ti.state for ti in tis if ti.task_id in edges}
    by_task: dict[str, list[TIRow]] = defaultdict(list)
    for ti in tis:
        if ti.state in SCHEDULABLE:
            by_task[ti.task_id].append(ti)
    current = {ti.id: ti.state for rows in by_task.values() for ti in rows}
    row_at = {(ti.task_id, ti.map_index): ti.id for t in edges for ti in by_task.get(t, ())}
    expanding: set[str] = set()

    def state_at(task_id: str, map_index: int) -> object:
        ti_id = row_at.get((task_id, map_index))
        return current[ti_id] if ti_id is not None else group_states.get((task_id, map_index), MISSING)

    def set_state(ti: TIRow, state: str) -> None:
        c = counts[ti.task_id]
        c[current[ti.id]] -= 1
        c[state] += 1
        current[ti.id] = state
        if ti.map_index < 0 and state in ("failed", "upstream_failed"):
            facts.failed_unexpanded.add(ti.task_id)

    changed = True
    while changed:
        changed = False
        for task_id in topological_order(dag):
            rows = by_task.get(task_id)
            if not rows:
                continue
            spec = dag.task(task_id)
            up: UpstreamStates | None = None
            same_for_all: Verdict | None = None  # the verdict, when no instance can differ
            for ti in rows:
                st = current[ti.id]
                if st == "scheduled" and ti.state == "scheduled":  # resumed from a trigger
                    queue(ti, spec)
                elif st == "up_for_retry":
                    if task_id in past_blocked:
                        continue  # its past is checked again for each try, as in Airflow
                    if ti.next_retry_at is None or ti.next_retry_at <= now:
                        queue(ti, spec)
                    elif out.wake_at is None or ti.next_retry_at < out.wake_at:
                        out.wake_at = ti.next_retry_at
                elif st is None:
                    inside, others = edges.get(task_id, ((), spec.upstream))
                    if up is None:
                        up = _upstream_states(others, counts,
                                              structure(dag).direct_setups.get(task_id, frozenset()))
                    if same_for_all is not None:
                        verdict = same_for_all
                    else:
                        verdict = _verdict(dag, spec, ti, up, inside, state_at, expanding, counts)
                        if not inside and not up.removed and not structure(dag).extra(task_id):
                            same_for_all = verdict  # (setup checks may differ per index)
                    if verdict is Verdict.RUN and task_id in past_blocked:
                        verdict = Verdict.WAIT
                    if spec.mapped is not None and ti.map_index < 0:
                        verdict, length = _placeholder_verdict(dag, spec, verdict, counts, facts)
                        if verdict is Verdict.RUN:
                            out.expand[ti.id] = length
                            expanding.add(task_id)
                            set_state(ti, "scheduled")  # being expanded: not a deadlock
                            continue
                    if verdict is Verdict.WAIT:
                        continue
                    if verdict is Verdict.RUN:
                        if spec.is_empty:
                            out.end[ti.id] = "success"
                            set_state(ti, "success")
                        else:
                            queue(ti, spec)
                    else:
                        out.end[ti.id] = verdict.value
                        set_state(ti, verdict.value)
                    changed = True
    progressed = bool(out.queue or out.end or out.expand or out.held)
    if not (truncated and progressed):  # unread instances are as stuck as the ones read
        _finish(dag, counts, out)
    return out


def _verdict(dag: DagSpec, spec: TaskSpec, ti: TIRow, up: UpstreamStates, inside: list[str],
             state_at: Callable[[str, int], object], expanding: set[str],
             counts: StateCounts) -> Verdict:
    """The trigger rule, then the setup checks Airflow's ``TriggerRuleDep`` adds.

    A task with no upstream or the ``always`` rule runs without either. A
    work task's indirect setups are checked first and a state they set wins
    (``combine``); a teardown whose rule passes still waits for its scope.
    """
    direct = _direct_verdict(dag, spec, ti, up, inside, state_at, expanding)
    if not spec.upstream or spec.trigger_rule == "always":
        return direct
    st = structure(dag)
    if spec.is_teardown:
        scope = st.teardown_scope.get(spec.task_id)
        if direct is Verdict.RUN and scope:
            reach = _reach(dag, spec.task_id, scope, ti, counts, state_at, expanding)
            return Verdict.RUN if reach is None or reach.upstream_done else Verdict.WAIT
        return direct
    setups = st.indirect_setups.get(spec.task_id)
    if not setups:
        return direct
    reach = _reach(dag, spec.task_id, setups, ti, counts, state_at, expanding)
    if reach is None:
        return direct
    return combine(evaluate_indirect_setups(reach, map_index=ti.map_index), direct)


def _direct_verdict(dag: DagSpec, spec: TaskSpec, ti: TIRow, up: UpstreamStates,
                    inside: list[str], state_at: Callable[[str, int], object],
                    expanding: set[str]) -> Verdict:
    """The trigger rule over ``up`` plus, in a mapped group, this index's in-group upstreams."""
    if not inside:
        return evaluate(spec.trigger_rule, up, map_index=ti.map_index)
    states = in_group_states(inside, ti.map_index, state_at, expanding)
    if states is None:
        return Verdict.RUN
    setups = structure(dag).direct_setups.get(spec.task_id, frozenset())
    in_setups = [u for u in inside if u in setups]
    setup_states = (in_group_states(in_setups, ti.map_index, state_at, expanding) or []
                    if in_setups else [])
    return evaluate(spec.trigger_rule,
                    up + tally(states, len(states), setup_states=setup_states,
                               setup_total=len(setup_states)),
                    map_index=ti.map_index)


def _reach(dag: DagSpec, task_id: str, tasks: tuple[str, ...], ti: TIRow, counts: StateCounts,
           state_at: Callable[[str, int], object], expanding: set[str]) -> UpstreamStates | None:
    """The counts of ``tasks`` as ``ti`` sees them: per index in its mapped group, else whole.

    ``None`` when none of them is to be looked at yet (only unexpanded
    in-group ones while ``ti`` is itself unexpanded).
    """
    inside, others = _group_extra(dag, task_id)
    inside = [t for t in inside if t in tasks]
    others = [t for t in others if t in tasks]
    whole = _upstream_states(others, counts)
    if not inside:
        return whole
    states = in_group_states(inside, ti.map_index, state_at, expanding)
    if states is None:
        return whole if others else None
    return whole + tally(states, len(states))


def _finish(dag: DagSpec, counts: StateCounts, out: RunDecision) -> None:
    """The run's end: failed or success on its effective leaves, or deadlocked.

    Instances waiting on a previous run are not a deadlock: Airflow's
    ``DagRun.update_state`` does not judge one while a ``depends_on_past``
    task is unfinished, and the run goes on when its past settles.
    """
    unfinished = {s for c in counts.values() for s, n in c.items() if n > 0 and s not in FINISHED_STATES}
    if unfinished:
        if not unfinished & ACTIVE and not _waits_on_past(dag, counts):
            out.run_state, out.deadlocked = "failed", True
        return
    leaves = effective_leaves(dag)
    failed = any(counts.get(t, Counter())["failed"] or counts.get(t, Counter())["upstream_failed"]
                 for t in leaves)
    out.run_state = "failed" if failed else "success"


def _waits_on_past(dag: DagSpec, counts: StateCounts) -> bool:
    """An unfinished instance belongs to a ``depends_on_past`` task."""
    return any(t in dag.task_map and dag.task(t).depends_on_past
               and any(n > 0 and s not in FINISHED_STATES for s, n in c.items())
               for t, c in counts.items())
