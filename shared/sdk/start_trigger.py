"""``start_from_trigger``: what the scheduler needs to start a task in the triggerer.

Serialized per task from literal values only: the class's
``start_trigger_args``, then ``partial``/``__init__`` values, then each map
index's expanded values (``start_from_trigger``, ``trigger_kwargs``,
``next_kwargs``, ``trigger_timeout``). An upstream reference for any of these
is refused at load: the scheduler decides before any task has run and never
reads task outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from shared.serde import to_jsonable
from shared.sdk.xcom_arg import XComArg, iter_xcom_references

START_KEYS = ("start_from_trigger", "trigger_kwargs", "next_kwargs", "trigger_timeout")


def own_copy(instance: Any) -> None:
    """Give an operator its own ``start_trigger_args`` so ``__init__`` edits never leak."""
    args = type(instance).__dict__.get("start_trigger_args") or getattr(type(instance), "start_trigger_args", None)
    if args is not None and dataclasses.is_dataclass(args):
        instance.start_trigger_args = dataclasses.replace(
            args, trigger_kwargs=dict(args.trigger_kwargs or {}) or args.trigger_kwargs)


def refuse_upstream(values: Mapping[str, Any], task_id: str, where: str) -> None:
    for key in ("start_from_trigger", "trigger_kwargs", "next_kwargs", "trigger_timeout"):
        if key in values and next(iter_xcom_references(values[key]), None) is not None:
            raise ValueError(
                f"task {task_id!r}: {key} given to {where} comes from an upstream task's output; "
                "Sluice decides start_from_trigger in the scheduler before any task runs and "
                "never reads task outputs there, so it must be a literal value")


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)


def _values(source: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = {}
    for key in START_KEYS:
        if key in source:
            value = source[key]
            out[key] = _seconds(value) if key == "trigger_timeout" else to_jsonable(value, f"{where} {key}")
    return out


def serialize(task: Any) -> dict | None:
    """The task's start_from_trigger facts for the scheduler, or ``None``."""
    mapped = getattr(task, "is_mapped", False)
    cls = task.operator_class if mapped else type(task)
    args = getattr(cls if mapped else task, "start_trigger_args", None)
    if args is None:
        return None
    where = f"task {task.task_id!r}"
    base = {
        "start_from_trigger": bool(getattr(cls if mapped else task, "start_from_trigger", False)),
        "trigger_kwargs": to_jsonable(args.trigger_kwargs, f"{where} trigger_kwargs"),
        "next_kwargs": to_jsonable(args.next_kwargs, f"{where} next_kwargs"),
        "trigger_timeout": _seconds(args.timeout),
    }
    out: dict[str, Any] = {"trigger_cls": args.trigger_cls, "next_method": args.next_method}
    if mapped:
        base.update(_values(task.partial_kwargs, where))
        out["per_index"] = _per_index(task, where)
    out["base"] = base
    return out


def _per_index(task: Any, where: str) -> dict | None:
    value = task.expand_input.value
    if task.expand_input.kind == "list_of_dicts":
        if isinstance(value, XComArg) or any(isinstance(e, XComArg) for e in value):
            return None
        return {"kind": "list", "items": [_values(e, where) for e in value]}
    keys = [k for k in value if k in START_KEYS]
    if not keys:
        return None
    lengths = [len(v) for v in value.values()]
    return {"kind": "product", "order": list(value), "lengths": lengths,
            "values": {k: [_values({k: e}, where)[k] for e in value[k]] for k in keys}}
