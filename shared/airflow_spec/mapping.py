"""Mapped tasks and ``start_from_trigger`` of ``airflow.sdk`` operators, as the scheduler reads them.

The JSON shapes are what ``scheduler.expansion`` and
``scheduler.start_trigger`` read: literal inputs give their length, upstream
references (``XComArg`` and its ``.map``/``.zip``/``.concat``) their tree.
``start_from_trigger`` is read from literal values only: the expanded value
of each map index, else ``partial``/``__init__``, else the class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.airflow_spec.errors import SpecError
from shared.serde import to_jsonable

#: The operator arguments that decide how an instance starts in the triggerer.
START_KEYS = ("start_from_trigger", "trigger_kwargs", "next_kwargs", "trigger_timeout")


def _seconds(value: Any) -> float | None:
    """A timeout (timedelta or seconds) in seconds."""
    if value is None:
        return None
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)


def _values(source: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The start keys ``source`` gives, as JSON (the timeout in seconds)."""
    out = {}
    for key in START_KEYS:
        if key in source:
            value = source[key]
            out[key] = (_seconds(value) if key == "trigger_timeout"
                        else to_jsonable(value, f"{where} {key}"))
    return out


def has_reference(value: Any) -> bool:
    """Whether ``value`` holds, at any depth, a value only known at run time (XComArg, group argument)."""
    from airflow.sdk.definitions._internal.mixins import ResolveMixin

    if isinstance(value, ResolveMixin):
        return True
    if isinstance(value, Mapping):
        return any(has_reference(v) for v in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return any(has_reference(v) for v in value)
    return False


def xcom_json(arg: Any, where: str) -> dict[str, Any]:
    """An upstream reference as the tree ``scheduler.expansion`` computes lengths from."""
    from airflow.sdk.definitions._internal.types import is_arg_set
    from airflow.sdk.definitions.xcom_arg import (
        ConcatXComArg,
        MapXComArg,
        PlainXComArg,
        ZipXComArg,
    )

    if isinstance(arg, PlainXComArg):
        return {"op": "plain", "task_id": arg.operator.task_id, "key": arg.key}
    if isinstance(arg, MapXComArg):
        return {"op": "map", "arg": xcom_json(arg.arg, where)}
    if isinstance(arg, ZipXComArg):
        return {"op": "zip", "args": [xcom_json(a, where) for a in arg.args],
                "longest": is_arg_set(arg.fillvalue)}
    if isinstance(arg, ConcatXComArg):
        return {"op": "concat", "args": [xcom_json(a, where) for a in arg.args]}
    raise SpecError(f"{where}: mapping over {type(arg).__name__} is not supported by Sluice")


def expand_json(expand_input: Any, where: str) -> dict[str, Any]:
    """``expand(...)`` / ``expand_kwargs(...)`` input: each literal's length, each reference's tree."""
    from airflow.sdk.definitions._internal.expandinput import (
        DictOfListsExpandInput,
        ListOfDictsExpandInput,
    )
    from airflow.sdk.definitions.xcom_arg import XComArg

    if isinstance(expand_input, ListOfDictsExpandInput):
        value = expand_input.value
        if isinstance(value, XComArg):
            return {"kind": "list_of_dicts", "xcom": xcom_json(value, where)}
        return {"kind": "list_of_dicts", "length": len(value)}
    if not isinstance(expand_input, DictOfListsExpandInput):
        raise SpecError(f"{where}: expand input {type(expand_input).__name__} is not supported by Sluice")
    inputs = []
    for key, value in expand_input.value.items():
        if isinstance(value, XComArg):
            inputs.append({"key": key, "xcom": xcom_json(value, where)})
        elif has_reference(value):
            raise SpecError(f"{where}: expand() argument {key!r} is a mapped task group's argument: "
                            "nested mapped task groups are not supported by Sluice")
        else:
            inputs.append({"key": key, "length": len(value)})
    return {"kind": "dict_of_lists", "inputs": inputs}


def mapped_json(task: Any, group: Any, where: str) -> dict[str, Any] | None:
    """How the task expands: its own ``expand`` input, else its mapped task group's, else ``None``.

    Every task of a mapped task group expands with the group (``"group"``
    names it), instance *i* following instance *i* of the others.
    """
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    if isinstance(task, MappedOperator):
        return expand_json(task._get_specified_expand_input(), where)
    if group is None:
        return None
    outer = _mapped_ancestor(group)
    if outer is not None:
        raise SpecError(f"{where}: mapped task group {group.group_id!r} is nested in mapped task "
                        f"group {outer.group_id!r}: nested mapped task groups are not supported")
    return {**expand_json(group._expand_input, where), "group": group.group_id}


def _mapped_ancestor(group: Any) -> Any:
    """The mapped task group ``group`` is nested in, if any."""
    from airflow.sdk.definitions.taskgroup import MappedTaskGroup

    parent = group.parent_group
    while parent is not None and not isinstance(parent, MappedTaskGroup):
        parent = parent.parent_group
    return parent


def _refuse_reference(values: Mapping[str, Any], task_id: str, where: str) -> None:
    for key in START_KEYS:
        if key in values and has_reference(values[key]):
            raise SpecError(
                f"task {task_id!r}: {key} given to {where} comes from an upstream task's output; "
                "Sluice decides start_from_trigger in the scheduler before any task runs and "
                "never reads task outputs there, so it must be a literal value")


def start_trigger_json(task: Any, dag_id: str) -> dict[str, Any] | None:
    """The task's ``start_from_trigger`` facts for the scheduler, or ``None`` without ``start_trigger_args``."""
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    args = task.start_trigger_args
    if args is None:
        return None
    where = f"task {task.task_id!r}"
    base = {
        "start_from_trigger": bool(task.start_from_trigger),
        "trigger_kwargs": to_jsonable(args.trigger_kwargs, f"{where} trigger_kwargs"),
        "next_kwargs": to_jsonable(args.next_kwargs, f"{where} next_kwargs"),
        "trigger_timeout": _seconds(args.timeout),
    }
    out: dict[str, Any] = {"trigger_cls": args.trigger_cls, "next_method": args.next_method}
    try:
        if isinstance(task, MappedOperator):
            _refuse_reference(task.partial_kwargs, task.task_id, "partial()")
            base.update(_values(task.partial_kwargs, where))
            out["per_index"] = _per_index(task, where)
        elif "start_trigger_args" not in vars(task):
            base.update(_own_values(task, where))
    except SpecError as exc:
        raise SpecError(f"DAG {dag_id!r}: {exc}") from None
    out["base"] = base
    return out


def _own_values(task: Any, where: str) -> dict[str, Any]:
    """The operator's own ``__init__`` values of the start keys.

    Its ``start_trigger_args`` is the class's object, which any instance's
    ``__init__`` may have changed in place; the values this instance was
    given keep it from leaking to the others (``None`` keeps the class's value).
    """
    init_kwargs = getattr(task, "_BaseOperator__init_kwargs", {})
    _refuse_reference(init_kwargs, task.task_id, f"{type(task).__name__}()")
    return _values({k: v for k, v in init_kwargs.items() if v is not None}, where)


def _per_index(task: Any, where: str) -> dict[str, Any] | None:
    """Start values that differ per map index, read from literal ``expand``/``expand_kwargs`` values."""
    from airflow.sdk.definitions._internal.expandinput import ListOfDictsExpandInput
    from airflow.sdk.definitions.xcom_arg import XComArg

    expand_input = task._get_specified_expand_input()
    value = expand_input.value
    if isinstance(expand_input, ListOfDictsExpandInput):
        if isinstance(value, XComArg):
            return None
        for element in value:
            if isinstance(element, Mapping):
                _refuse_reference(element, task.task_id, "expand_kwargs()")
        if any(isinstance(e, XComArg) for e in value):
            return None
        return {"kind": "list", "items": [_values(e, where) for e in value]}
    _refuse_reference(value, task.task_id, "expand()")
    keys = [k for k in value if k in START_KEYS]
    if not keys:
        return None
    if any(has_reference(v) for v in value.values()):
        raise SpecError(f"{where}: {', '.join(keys)} expanded together with an upstream task's "
                        "output: Sluice decides start_from_trigger before any task runs, so every "
                        "expand() argument of this task must be a literal")
    return {"kind": "product", "order": list(value), "lengths": [len(v) for v in value.values()],
            "values": {k: [_values({k: e}, where)[k] for e in value[k]] for k in keys}}

