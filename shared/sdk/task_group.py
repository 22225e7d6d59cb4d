"""Task groups: a prefix for task ids (``group.task``) and a unit for ``>>``.

A *mapped* task group (``@task_group`` + ``.expand()``) is built in
``shared.sdk.mapped_group``; here it is only a group that carries its expand
input, so any task can find the mapped group it belongs to.

Group ids are unique in a DAG, as in Airflow: a second ``TaskGroup("g")``
raises ``DuplicateTaskIdFound``, while each call of a ``@task_group``
function gets a fresh id (``g``, ``g__1``, ``g__2``...).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.sdk.exceptions import DuplicateTaskIdFound

if TYPE_CHECKING:
    from shared.sdk.baseoperator import BaseOperator
    from shared.sdk.dag import DAG

_group_stack: list[TaskGroup] = []


def current_group() -> TaskGroup | None:
    return _group_stack[-1] if _group_stack else None


class TaskGroup:
    """Groups tasks under ``group_id``; dependencies on a group reach its roots/leaves."""

    def __init__(self, group_id: str | None, *, dag: DAG | None = None,
                 parent_group: TaskGroup | None = None, default_args: dict | None = None,
                 prefix_group_id: bool = True, tooltip: str = "", ui_color: str = "",
                 ui_fgcolor: str = "", add_suffix_on_collision: bool = False):
        from shared.sdk.dag import current_dag

        self.dag = dag or (parent_group.dag if parent_group else None) or current_dag()
        if self.dag is None and group_id is not None:
            raise RuntimeError(f"TaskGroup {group_id!r} must be created inside a DAG")
        self.parent_group = None if group_id is None else (
            parent_group or current_group() or self.dag.task_group
        )
        # ids of every group of the DAG, shared from the root down
        self.used_group_ids: set[str] = (
            set() if self.parent_group is None else self.parent_group.used_group_ids
        )
        self._group_id = group_id
        self.prefix_group_id = prefix_group_id
        self.default_args = dict(default_args or {})
        self.tooltip = tooltip
        self.children: dict[str, Any] = {}
        self.mapped_expand: Any = None  # the expand input of a mapped @task_group
        if self.parent_group is not None:
            self._group_id = self._free_label(group_id, add_suffix_on_collision)
            self.used_group_ids.add(self.group_id)
            self.parent_group.children[self.group_id] = self

    def _id_for(self, label: str) -> str:
        """The full id this group has with ``label``: its parent's prefix, if any, added."""
        return self.parent_group.child_id(label) if self.parent_group is not None else label

    def _taken_ids(self) -> set[str]:
        """Ids a new group may not take: every group's and every task's of the DAG."""
        return self.used_group_ids | set(getattr(self.dag, "task_dict", ()))

    def _free_label(self, label: str, add_suffix: bool) -> str:
        """``label``, or with ``add_suffix`` the next free ``label__N``, as Airflow names them.

        Without ``add_suffix`` a taken id raises ``DuplicateTaskIdFound`` with
        Airflow's message, instead of merging two groups into one.
        """
        taken = self._taken_ids()
        if self._id_for(label) not in taken:
            return label
        if not add_suffix:
            raise DuplicateTaskIdFound(f"group_id '{label}' has already been added to the DAG")
        base = re.split(r"__\d+$", label)[0]
        pattern = re.compile(re.escape(self._id_for(base)) + r"__(\d+)")
        used = [int(m.group(1)) for m in map(pattern.fullmatch, taken) if m]
        return f"{base}__{max(used, default=0) + 1}"

    @classmethod
    def root(cls, dag: DAG) -> TaskGroup:
        return cls(None, dag=dag)

    @property
    def is_root(self) -> bool:
        return self._group_id is None

    @property
    def is_mapped(self) -> bool:
        return self.mapped_expand is not None

    @property
    def group_id(self) -> str | None:
        return None if self.is_root else self._id_for(self._group_id)

    def child_id(self, label: str) -> str:
        if not self.is_root and self.prefix_group_id:
            return f"{self.group_id}.{label}"
        return label

    def merged_default_args(self) -> dict:
        parent = self.parent_group.merged_default_args() if self.parent_group else {}
        return {**parent, **self.default_args}

    def __enter__(self) -> TaskGroup:
        _group_stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _group_stack.pop()

    def iter_tasks(self):
        """Every task in the group and its subgroups, mapped tasks included."""
        from shared.sdk.baseoperator import AbstractOperator

        for child in self.children.values():
            if isinstance(child, TaskGroup):
                yield from child.iter_tasks()
            elif isinstance(child, AbstractOperator):
                yield child

    def get_roots(self) -> list[BaseOperator]:
        tasks = list(self.iter_tasks())
        ids = {t.task_id for t in tasks}
        return [t for t in tasks if not (t.upstream_task_ids & ids)]

    def get_leaves(self) -> list[BaseOperator]:
        tasks = list(self.iter_tasks())
        ids = {t.task_id for t in tasks}
        return [t for t in tasks if not (t.downstream_task_ids & ids)]

    # dependency operators --------------------------------------------------
    def set_downstream(self, other: Any) -> None:
        for leaf in self.get_leaves():
            leaf.set_downstream(other)

    def set_upstream(self, other: Any) -> None:
        for root in self.get_roots():
            root.set_upstream(other)

    def __rshift__(self, other: Any) -> Any:
        self.set_downstream(other)
        return other

    def __lshift__(self, other: Any) -> Any:
        self.set_upstream(other)
        return other

    def __rrshift__(self, other: Any) -> TaskGroup:
        self.set_upstream(other)
        return self

    def __rlshift__(self, other: Any) -> TaskGroup:
        self.set_downstream(other)
        return self

    # Airflow exposes these for ``chain`` and edge helpers
    @property
    def roots(self) -> list[BaseOperator]:
        return self.get_roots()

    @property
    def leaves(self) -> list[BaseOperator]:
        return self.get_leaves()


class MappedTaskGroup(TaskGroup):
    """A task group whose every task expands together over ``expand_input``.

    Only ``@task_group`` builds one, so, as in Airflow, a reused group id gets a suffix.
    """

    def __init__(self, group_id: str | None, *, expand_input: Any, **kwargs: Any):
        kwargs.setdefault("add_suffix_on_collision", True)
        super().__init__(group_id, **kwargs)
        self.mapped_expand = expand_input


def mapped_group_of(node: Any) -> TaskGroup | None:
    """The mapped task group a task (or group) sits in, itself included for a group."""
    group = node if isinstance(node, TaskGroup) else getattr(node, "task_group", None)
    while group is not None:
        if group.is_mapped:
            return group
        group = group.parent_group
    return None


def task_group(group_id: str | Callable | None = None, **group_kwargs: Any) -> Any:
    """``@task_group``: calling the function builds its tasks inside a group."""

    def wrap(fn: Callable) -> _TaskGroupFactory:
        return _TaskGroupFactory(fn, group_id if isinstance(group_id, str) else None, group_kwargs)

    if callable(group_id):
        fn, group_id = group_id, None
        return wrap(fn)
    return wrap


class _TaskGroupFactory:
    """A ``@task_group`` function; each call builds a new group, named uniquely."""

    def __init__(self, fn: Callable, group_id: str | None, kwargs: dict):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.group_id = group_id or fn.__name__
        self.kwargs = kwargs

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The function's return value, else the group (``g``, then ``g__1``... when reused)."""
        options = {**self.kwargs, "add_suffix_on_collision": True}
        with TaskGroup(self.group_id, **options) as group:
            result = self.fn(*args, **kwargs)
        return group if result is None else result

    def override(self, **kwargs: Any) -> _TaskGroupFactory:
        merged = {**self.kwargs, **kwargs}
        gid = merged.pop("group_id", self.group_id)
        return _TaskGroupFactory(self.fn, gid, merged)

    def partial(self, **kwargs: Any) -> Any:
        from shared.sdk.mapped_group import GroupPartial

        return GroupPartial(self, {}).partial(**kwargs)

    def expand(self, **kwargs: Any) -> Any:
        return self.partial().expand(**kwargs)

    def expand_kwargs(self, arg: Any) -> Any:
        return self.partial().expand_kwargs(arg)
