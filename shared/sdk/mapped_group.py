"""Mapped task groups: ``@task_group`` functions with ``.partial()``/``.expand()``/``.expand_kwargs()``.

As in Airflow, the group function runs once at parse time; each mapped
parameter is a ``MappedArgument`` stub that resolves, in the worker, to the
value of the instance's own map index. Every task built inside the group then
becomes one ``MappedOperator`` node over the group's input (``GroupExpandInput``),
so all of them expand together with the group's length through the ordinary
mapped-task machinery: placeholder, task-map length, one-statement expansion,
reduce by lazy sequence. Instance *i* of an in-group task depends only on
instance *i* of the others (the scheduler's per-index rule in ``decide``).

Refused at load, naming the DAG, group and task: ``expand`` of an operator
inside a mapped group, and a mapped group inside another one.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from shared.sdk.mapped import (
    DictOfListsExpandInput,
    ListOfDictsExpandInput,
    MappedOperator,
    _expand_kwargs_input,
    checked_expand_input,
    naming_the_task,
    prevent_duplicates,
    refuse_unknown_parameters,
)
from shared.sdk.task_group import MappedTaskGroup, TaskGroup, current_group, mapped_group_of
from shared.trigger_rule import TriggerRule
from shared.sdk.xcom_arg import NOTSET, PlainXComArg, XComArg, iter_xcom_references

GroupInput = DictOfListsExpandInput | ListOfDictsExpandInput


class GroupExpandInput:
    """What a task inside a mapped group expands over: its group's input.

    The values reach the task through the ``MappedArgument`` stubs in its
    arguments, never as its own keyword arguments, so ``resolve`` gives none.
    """

    kind = "group"
    value: dict = {}  # no operator argument is expanded directly

    def __init__(self, group: TaskGroup):
        self.group = group
        self.inner: GroupInput = group.mapped_expand

    def references(self) -> list[PlainXComArg]:
        return self.inner.references()

    def has_xcom(self) -> bool:
        return self.inner.has_xcom()

    def serialize(self) -> dict:
        return {**self.inner.serialize(), "group": self.group.group_id}

    def resolve(self, map_index: int, resolver: Any) -> tuple[dict[str, Any], set[str]]:
        return {}, set()


class MappedArgument(XComArg):
    """A mapped group function's parameter: this instance's value of ``key``.

    Resolved in the worker for the consuming instance's map index, with
    Airflow's index arithmetic (cross product, last key fastest; dicts as
    pairs). For ``expand_kwargs`` a key missing from the instance's dict takes
    the parameter's default.
    """

    def __init__(self, expand_input: GroupInput, key: str, group_id: str, default: Any = NOTSET):
        self.input = expand_input
        self.key = key
        self.group_id = group_id
        self.default = default

    def __repr__(self) -> str:
        return f"MappedArgument({self.group_id!r}, {self.key!r})"

    def iter_references(self) -> Iterator[PlainXComArg]:
        yield from self.input.references()

    def resolve(self, resolver: Any) -> Any:
        index = getattr(resolver, "map_index", None)
        if index is None or index < 0:
            raise RuntimeError(f"mapped task group {self.group_id!r}: argument {self.key!r} "
                               "can only be resolved by an expanded instance (map_index >= 0)")
        values, _ = self.input.resolve(index, resolver)
        if self.key in values:
            return values[self.key]
        if self.default is not NOTSET:
            return self.default
        raise ValueError(f"mapped task group {self.group_id!r}: expand_kwargs() element at "
                         f"map_index {index} has no key {self.key!r}")

    def to_json(self) -> dict:
        return {"op": "group_argument", "group": self.group_id, "key": self.key}


class GroupPartial:
    """``group_fn.partial(...)``: arguments shared by every instance of a mapped group."""

    def __init__(self, factory: Any, kwargs: dict[str, Any]):
        self.factory = factory
        self.kwargs = kwargs

    @property
    def _params(self) -> dict[str, inspect.Parameter]:
        return dict(inspect.signature(self.factory.fn).parameters)

    def _naming(self) -> AbstractContextManager[None]:
        kw = self.factory.kwargs
        return naming_the_task("task group", self.factory.group_id, kw.get("dag"), kw.get("parent_group"))

    def _validate_names(self, kwargs: dict[str, Any], where: str) -> None:
        refuse_unknown_parameters(self._params, kwargs, where)

    def partial(self, **kwargs: Any) -> GroupPartial:
        with self._naming():
            self._validate_names(kwargs, "partial")
            prevent_duplicates(self.kwargs, kwargs, fail_reason="duplicate partial")
        return GroupPartial(self.factory, {**self.kwargs, **kwargs})

    def expand(self, **mapped: Any) -> Any:
        with self._naming():
            expand_input = checked_expand_input(mapped, self.kwargs, self._validate_names)
        return self._build(expand_input, list(mapped))

    def expand_kwargs(self, kwargs: Any) -> Any:
        with self._naming():
            expand_input = _expand_kwargs_input(kwargs)
            params = self._params
            if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values()):
                raise TypeError("calling expand_kwargs() on task group function with * or ** is not supported")
        return self._build(expand_input, [k for k in params if k not in self.kwargs])

    def _build(self, expand_input: GroupInput, keys: list[str]) -> Any:
        factory = self.factory
        outer = mapped_group_of(current_group())
        if outer is not None:
            raise ValueError(
                f"DAG {_dag_id(outer)!r}: mapped task group "
                f"{current_group().child_id(factory.group_id)!r} is nested in mapped task group "
                f"{outer.group_id!r}: Nested Mapped TaskGroups are not yet supported")
        group = MappedTaskGroup(factory.group_id, expand_input=expand_input, **factory.kwargs)
        params = self._params
        stubs = {k: MappedArgument(expand_input, k, group.group_id, _default(params.get(k)))
                 for k in keys}
        with group:
            result = factory.fn(**self.kwargs, **stubs)
        replaced = _map_group_tasks(group)
        for ref in [*expand_input.references(), *iter_xcom_references(self.kwargs)]:
            group.set_upstream(ref.operator)
        return group if result is None else _forward(result, replaced)


def _default(param: inspect.Parameter | None) -> Any:
    if param is None or param.default is inspect.Parameter.empty:
        return NOTSET
    return param.default


def _dag_id(group: TaskGroup) -> str | None:
    return getattr(group.dag, "dag_id", None)


def _map_group_tasks(group: TaskGroup) -> dict[int, MappedOperator]:
    """Put a ``MappedOperator`` over the group's input in place of every task built in it."""
    group_input = GroupExpandInput(group)
    from_upstream = group_input.has_xcom()
    replaced: dict[int, MappedOperator] = {}
    for op in list(group.iter_tasks()):
        if from_upstream and op.trigger_rule == TriggerRule.ALWAYS:
            raise ValueError(
                f"DAG {_dag_id(group)!r}: task {op.task_id!r} in mapped task group "
                f"{group.group_id!r}: Task-generated mapping within a mapped task group is not "
                "allowed with trigger rule 'always'")
        node = MappedOperator.for_group_task(op, group_input)
        group.dag.task_dict[op.task_id] = node
        op.task_group.children[op.task_id] = node
        replaced[id(op)] = node
    return replaced


def _forward(result: Any, replaced: dict[int, MappedOperator]) -> Any:
    """The group function's return value, pointing at the mapped nodes."""
    if isinstance(result, PlainXComArg) and id(result.operator) in replaced:
        return PlainXComArg(replaced[id(result.operator)], result.key)
    if isinstance(result, list | tuple):
        return type(result)(_forward(r, replaced) for r in result)
    return replaced.get(id(result), result)
