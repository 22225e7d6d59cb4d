"""Setup and teardown structure of a DAG: which tasks each one's rules look at.

Pure graph facts, computed once per DagSpec (cached on it) and only for DAGs
that have setups or teardowns; the decisions themselves are in
``scheduler.decide`` and ``shared.state.trigger_rules``. Each function says
which Airflow 3.3 method it follows, because those define the semantics:

* a work task waits for its *relevant indirect* setups to succeed
  (``DAGNode.get_upstreams_only_setups`` minus its direct upstreams, checked by
  ``TriggerRuleDep._evaluate_setup_constraint``);
* a teardown waits for the tasks *in scope* between its setups and itself
  (``TriggerRuleDep._evaluate_teardown_scope``);
* a run's state is judged on its *effective leaves*: teardowns are ignored
  unless ``on_failure_fail_dagrun`` (``DagRun._tis_for_dagrun_state``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.serialization import DagSpec


@dataclass(frozen=True)
class SetupStructure:
    """Per task: the setups and in-scope tasks its rules read besides its direct upstreams."""

    indirect_setups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # work task -> setups
    teardown_scope: dict[str, tuple[str, ...]] = field(default_factory=dict)   # teardown -> tasks
    direct_setups: dict[str, frozenset[str]] = field(default_factory=dict)     # task -> setup upstreams

    def extra(self, task_id: str) -> tuple[str, ...]:
        """Every task besides the direct upstreams that ``task_id``'s decision reads."""
        return self.indirect_setups.get(task_id, ()) + self.teardown_scope.get(task_id, ())


EMPTY = SetupStructure()


def structure(dag: DagSpec) -> SetupStructure:
    """The DAG's setup/teardown structure (empty, at no cost, for a DAG without any)."""
    cached = dag.__dict__.get("_setups")
    if cached is not None:
        return cached
    built = _build(dag) if any(t.is_setup or t.is_teardown for t in dag.tasks) else EMPTY
    object.__setattr__(dag, "__dict__", {**dag.__dict__, "_setups": built})
    return built


def _build(dag: DagSpec) -> SetupStructure:
    ancestors = _closure(dag, "upstream")
    descendants = _closure(dag, "downstream")
    out = SetupStructure()
    for t in dag.tasks:
        setups = frozenset(u for u in t.upstream if dag.task(u).is_setup)
        if setups:
            out.direct_setups[t.task_id] = setups
        if t.is_teardown:
            scope = _teardown_scope(dag, t.task_id, setups, ancestors, descendants)
            if scope:
                out.teardown_scope[t.task_id] = scope
        else:
            indirect = _indirect_setups(dag, t.task_id, ancestors, descendants)
            if indirect:
                out.indirect_setups[t.task_id] = indirect
    return out


def _indirect_setups(dag: DagSpec, task_id: str, ancestors: dict[str, frozenset[str]],
                     descendants: dict[str, frozenset[str]]) -> tuple[str, ...]:
    """Airflow's ``get_upstreams_only_setups`` less the direct upstreams.

    An upstream setup is relevant when it has no teardown, or one of its
    teardowns is downstream of ``task_id`` (a setup whose teardowns all ran
    before this task is out of its scope).
    """
    down_teardowns = {d for d in descendants[task_id] if dag.task(d).is_teardown}
    direct = set(dag.task(task_id).upstream)
    found = []
    for up in ancestors[task_id]:
        setup = dag.task(up)
        if not setup.is_setup or up in direct:
            continue
        teardowns = {d for d in setup.downstream if dag.task(d).is_teardown}
        if not teardowns or teardowns & down_teardowns:
            found.append(up)
    return tuple(sorted(found))


def _teardown_scope(dag: DagSpec, task_id: str, setups: frozenset[str],
                    ancestors: dict[str, frozenset[str]],
                    descendants: dict[str, frozenset[str]]) -> tuple[str, ...]:
    """Indirect upstreams of the teardown that are downstream of one of its direct setups."""
    indirect = ancestors[task_id] - set(dag.task(task_id).upstream)
    scope: set[str] = set()
    for setup in setups:
        scope |= indirect & descendants[setup]
    return tuple(sorted(scope))


def _closure(dag: DagSpec, direction: str) -> dict[str, frozenset[str]]:
    """Every task's transitive upstreams (or downstreams), filled in topological order."""
    from scheduler.decide import topological_order

    order = topological_order(dag)
    if direction == "downstream":
        order = list(reversed(order))
    out: dict[str, frozenset[str]] = {}
    for tid in order:
        near = getattr(dag.task(tid), direction)
        acc: set[str] = set(near)
        for other in near:
            acc |= out[other]
        out[tid] = frozenset(acc)
    return out


def effective_leaves(dag: DagSpec) -> list[str]:
    """The tasks a finished run's state is judged on (``DagRun._tis_for_dagrun_state``).

    A task is a leaf when each of its downstreams is a teardown that does not
    fail the run; a teardown is itself ignored unless ``on_failure_fail_dagrun``.
    A DAG of nothing but ignorable teardowns falls back to its plain leaves.
    """
    cached = dag.__dict__.get("_leaves")
    if cached is not None:
        return cached

    def ignorable(task_id: str) -> bool:
        t = dag.task(task_id)
        return t.is_teardown and not t.on_failure_fail_dagrun

    leaves = [t.task_id for t in dag.tasks
              if all(ignorable(d) for d in t.downstream) and not ignorable(t.task_id)]
    if not leaves:
        leaves = [t.task_id for t in dag.tasks if not t.downstream]
    object.__setattr__(dag, "__dict__", {**dag.__dict__, "_leaves": leaves})
    return leaves
