"""How many instances a mapped task has in one run: pure arithmetic over run facts.

Literal inputs have their length in the serialized DAG. An upstream's output
has the length its producer recorded (a task-map row) or, for a mapped
producer, the number of its instances that returned a value, known once all
of them finished. ``None`` means "not known yet".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from math import prod

from shared.serialization import DagSpec, TaskSpec
from shared.state.trigger_rules import FINISHED_STATES

StateCounts = dict[str, Counter]  # task_id -> Counter(state -> instances)


@dataclass
class RunFacts:
    task_map: dict[str, int] = field(default_factory=dict)   # unmapped producer -> length
    returned: dict[str, int] = field(default_factory=dict)   # mapped producer -> values returned
    # tasks whose -1 instance failed or is upstream_failed: for a mapped task, one
    # that never expanded (its instances' states cannot tell that apart)
    failed_unexpanded: set[str] = field(default_factory=set)


def literal_length(mapped: dict) -> int | None:
    """The instance count when every input is literal, else ``None``."""
    if mapped["kind"] == "list_of_dicts":
        return mapped.get("length")
    lengths = [i.get("length") for i in mapped["inputs"]]
    return None if any(n is None for n in lengths) else prod(lengths)


def producers(tree: dict) -> set[str]:
    if tree["op"] == "plain":
        return {tree["task_id"]}
    if tree["op"] == "map":
        return producers(tree["arg"])
    return set().union(*(producers(a) for a in tree["args"]))


def mapped_producers(mapped: dict) -> set[str]:
    trees = [mapped["xcom"]] if mapped.get("xcom") else [
        i["xcom"] for i in mapped.get("inputs", []) if "xcom" in i]
    return set().union(*(producers(t) for t in trees)) if trees else set()


def _xcom_length(tree: dict, dag: DagSpec, facts: RunFacts, states: StateCounts) -> int | None:
    match tree["op"]:
        case "plain":
            return _producer_length(dag.task(tree["task_id"]), facts, states)
        case "map":
            return _xcom_length(tree["arg"], dag, facts, states)
        case "zip" | "concat":
            lengths = [_xcom_length(a, dag, facts, states) for a in tree["args"]]
            if any(n is None for n in lengths):
                return None
            if tree["op"] == "concat":
                return sum(lengths)
            return max(lengths) if tree.get("longest") else min(lengths)
    raise ValueError(f"unknown XComArg op {tree['op']!r}")


def _producer_length(producer: TaskSpec, facts: RunFacts, states: StateCounts) -> int | None:
    mine = [s for s, n in states.get(producer.task_id, {}).items() if n > 0]
    if any(s not in FINISHED_STATES for s in mine):
        return None
    if producer.mapped is not None:
        return facts.returned.get(producer.task_id, 0)
    if producer.task_id in facts.task_map:
        return facts.task_map[producer.task_id]
    return 0 if mine and all(s in ("skipped", "removed") for s in mine) else None


def run_length(task: TaskSpec, dag: DagSpec, facts: RunFacts, states: StateCounts) -> int | None:
    """Instance count of ``task`` in this run, or ``None`` while not known."""
    mapped = task.mapped
    fixed = literal_length(mapped)
    if fixed is not None:
        return fixed
    if mapped["kind"] == "list_of_dicts":
        return _xcom_length(mapped["xcom"], dag, facts, states)
    lengths = [i["length"] if "length" in i else _xcom_length(i["xcom"], dag, facts, states)
               for i in mapped["inputs"]]
    return None if any(n is None for n in lengths) else prod(lengths)
