"""``BaseOperator``: one unit of work, its dependencies and its run-time knobs.

``default_args`` (DAG, then task group, then the call's own) fill any
``__init__`` parameter of the operator's class hierarchy that the call leaves
out. The keyword arguments an operator was built with are kept, so a worker
can build a fresh copy of it for every try (and for every resume of a
deferred task: ``__init__`` runs again, as in Airflow).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any, ClassVar

from shared.sdk.dag import DAG, current_dag
from shared.sdk.exceptions import DuplicateTaskIdFound, TaskDeferred
from shared.sdk.task_group import TaskGroup, current_group
from shared.trigger_rule import TriggerRule

DEFAULT_RETRY_DELAY = timedelta(seconds=300)
WEIGHT_RULES = frozenset({"downstream", "upstream", "absolute"})


def _refuse_unsupported(task_id: str, **flags: bool) -> None:
    """Settings Sluice does not implement fail at load, never silently ignored."""
    for name, value in flags.items():
        if value:
            raise NotImplementedError(
                f"{name}=True (task {task_id!r}) is not supported by Sluice: "
                f"remove it or set it to False")

_detached = 0  # >0 while a worker re-creates an operator outside its DAG


class DependencyMixin:
    """``>>``, ``<<`` and ``set_upstream`` over tasks, lists, groups and XComArgs."""

    def _tasks_of(self, other: Any) -> list[Any]:
        from shared.sdk.xcom_arg import XComArg

        if isinstance(other, XComArg):
            return [ref.operator for ref in other.iter_references()]
        if isinstance(other, TaskGroup):
            return [other]
        if isinstance(other, Iterable) and not isinstance(other, str):
            return [t for o in other for t in self._tasks_of(o)]
        return [other]

    def __rshift__(self, other: Any) -> Any:
        self.set_downstream(other)
        return other

    def __lshift__(self, other: Any) -> Any:
        self.set_upstream(other)
        return other

    def __rrshift__(self, other: Any) -> Any:
        self.set_upstream(other)
        return self

    def __rlshift__(self, other: Any) -> Any:
        self.set_downstream(other)
        return self

    def as_setup(self, *args: Any, **kwargs: Any) -> Any:
        raise AttributeError("as_setup() is not supported by Sluice: setup and teardown tasks")

    def as_teardown(self, *args: Any, **kwargs: Any) -> Any:
        raise AttributeError("as_teardown() is not supported by Sluice: setup and teardown tasks")


class AbstractOperator(DependencyMixin):
    """What plain and mapped operators share: identity and the dependency graph."""

    task_id: str
    dag: DAG | None
    task_group: TaskGroup | None
    is_mapped: ClassVar[bool] = False

    def _init_graph(self, task_id: str, dag: DAG | None, task_group: TaskGroup | None) -> None:
        self.upstream_task_ids: set[str] = set()
        self.downstream_task_ids: set[str] = set()
        group = task_group or current_group()
        dag = dag or (group.dag if group else None) or current_dag()
        if group is None and dag is not None:
            group = dag.task_group
        self.task_group = group
        self.task_id = group.child_id(task_id) if group is not None else task_id
        self.dag = dag
        if dag is not None and not _detached:
            if self.task_id in group.used_group_ids:  # never silently replace a group
                raise DuplicateTaskIdFound(
                    f"Task id '{self.task_id}' has already been added to the DAG {dag.dag_id!r}")
            dag.add_task(self)
            group.children[self.task_id] = self

    @property
    def label(self) -> str:
        return self.task_id

    def _relate(self, other: Any, *, upstream: bool) -> None:
        for task in self._tasks_of(other):
            if isinstance(task, TaskGroup):
                if upstream:
                    task.set_downstream(self)
                else:
                    task.set_upstream(self)
                continue
            if upstream:
                self.upstream_task_ids.add(task.task_id)
                task.downstream_task_ids.add(self.task_id)
            else:
                self.downstream_task_ids.add(task.task_id)
                task.upstream_task_ids.add(self.task_id)
            if self.dag is not None and task.dag is None:
                self.dag.add_task(task)

    def set_upstream(self, other: Any) -> None:
        self._relate(other, upstream=True)

    def set_downstream(self, other: Any) -> None:
        self._relate(other, upstream=False)

    @property
    def upstream_list(self) -> list[Any]:
        return [self.dag.task_dict[t] for t in sorted(self.upstream_task_ids)]

    @property
    def downstream_list(self) -> list[Any]:
        return [self.dag.task_dict[t] for t in sorted(self.downstream_task_ids)]

    @property
    def output(self) -> Any:
        from shared.sdk.xcom_arg import PlainXComArg

        return PlainXComArg(self)

    def __repr__(self) -> str:
        return f"<Task({type(self).__name__}): {self.task_id}>"


def _init_params(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        init = getattr(init, "__wrapped__", init)
        for p in inspect.signature(init).parameters.values():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self":
                names.add(p.name)
    return names


def _wrap_init(init):
    @functools.wraps(init)
    def wrapper(self, *args: Any, **kwargs: Any) -> None:
        if getattr(self, "_sluice_in_init", False):
            return init(self, *args, **kwargs)
        if args:
            raise TypeError(f"{type(self).__name__}: use keyword arguments only")
        self._sluice_in_init = True
        try:
            from shared.sdk.start_trigger import own_copy

            own_copy(self)
            kwargs = _apply_defaults(type(self), kwargs)
            self._init_kwargs = dict(kwargs)
            init(self, **kwargs)
        finally:
            self._sluice_in_init = False
        self._after_init()

    return wrapper


def _apply_defaults(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    dag = kwargs.get("dag") or current_dag()
    group = kwargs.get("task_group") or current_group()
    defaults: dict[str, Any] = {}
    if dag is not None:
        defaults.update(dag.default_args)
    if group is not None:
        defaults.update(group.merged_default_args())
    defaults.update(kwargs.pop("default_args", None) or {})
    if not defaults:
        return kwargs
    accepted = _init_params(cls)
    merged = dict(kwargs)
    for key, value in defaults.items():
        if key in accepted and key not in merged:
            merged[key] = value
    if "params" in defaults and "params" in merged and merged["params"] is not defaults["params"]:
        merged["params"] = {**defaults["params"], **merged["params"]}
    return merged


class BaseOperator(AbstractOperator):
    """Subclass and implement ``execute(context)``; the return value is the task's XCom."""

    template_fields: ClassVar[Sequence[str]] = ()
    template_ext: ClassVar[Sequence[str]] = ()
    template_fields_renderers: ClassVar[dict[str, str]] = {}
    ui_color: ClassVar[str] = "#fff"
    ui_fgcolor: ClassVar[str] = "#000"
    start_trigger_args: Any = None
    start_from_trigger: bool = False
    _is_empty: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _wrap_init(cls.__dict__["__init__"])

    def __init__(self, *, task_id: str, owner: str = "airflow", email: Any = None,
                 email_on_retry: bool = True, email_on_failure: bool = True,
                 retries: int | None = 0, retry_delay: timedelta | float = DEFAULT_RETRY_DELAY,
                 retry_exponential_backoff: bool | float = False,
                 max_retry_delay: timedelta | float | None = None,
                 start_date: Any = None, end_date: Any = None, depends_on_past: bool = False,
                 wait_for_downstream: bool = False, dag: DAG | None = None,
                 params: dict | None = None, priority_weight: int = 1,
                 weight_rule: str = "downstream", queue: str = "default",
                 pool: str | None = None, pool_slots: int = 1, sla: Any = None,
                 execution_timeout: timedelta | float | None = None,
                 on_execute_callback: Any = None, on_failure_callback: Any = None,
                 on_success_callback: Any = None, on_retry_callback: Any = None,
                 on_skipped_callback: Any = None,
                 trigger_rule: str = TriggerRule.ALL_SUCCESS, resources: Any = None,
                 run_as_user: str | None = None, max_active_tis_per_dag: int | None = None,
                 max_active_tis_per_dagrun: int | None = None, executor_config: dict | None = None,
                 do_xcom_push: bool = True, multiple_outputs: bool = False,
                 inlets: Any = None, outlets: Any = None, task_group: TaskGroup | None = None,
                 doc: str | None = None, doc_md: str | None = None, doc_json: str | None = None,
                 doc_yaml: str | None = None, doc_rst: str | None = None,
                 map_index_template: str | None = None, executor: str | None = None,
                 **kwargs: Any):
        if kwargs:
            raise TypeError(
                f"Invalid arguments were passed to {type(self).__name__} (task_id: {task_id}). "
                f"Invalid arguments were: **kwargs: {kwargs}"
            )
        if not TriggerRule.is_valid(trigger_rule):
            raise ValueError(
                f"The trigger_rule must be one of {sorted(TriggerRule.all_triggers())},"
                f"'{task_id}'; received '{trigger_rule}'."
            )
        _refuse_unsupported(task_id, depends_on_past=depends_on_past,
                            wait_for_downstream=wait_for_downstream)
        if str(weight_rule) not in WEIGHT_RULES:
            raise ValueError(f"The weight_rule must be one of {sorted(WEIGHT_RULES)},"
                             f"'{task_id}'; received '{weight_rule}'.")
        self._init_graph(task_id, dag, task_group)
        self.owner = owner
        self.weight_rule = str(weight_rule)
        self.retries = int(retries or 0)
        self.retry_delay = _as_timedelta(retry_delay)
        self.retry_exponential_backoff = retry_exponential_backoff
        self.max_retry_delay = _as_timedelta(max_retry_delay)
        self.execution_timeout = _as_timedelta(execution_timeout)
        self.params = dict(params or {})
        self.priority_weight = priority_weight
        self.queue = queue
        self.pool = pool or "default_pool"
        self.pool_slots = pool_slots
        self.trigger_rule = TriggerRule(trigger_rule)
        self.max_active_tis_per_dag = max_active_tis_per_dag
        self.max_active_tis_per_dagrun = max_active_tis_per_dagrun
        self.do_xcom_push = do_xcom_push
        self.multiple_outputs = multiple_outputs
        self.on_execute_callback = on_execute_callback
        self.on_failure_callback = on_failure_callback
        self.on_success_callback = on_success_callback
        self.on_retry_callback = on_retry_callback
        self.on_skipped_callback = on_skipped_callback
        self.map_index_template = map_index_template
        self.doc_md = doc_md
        self.start_date = start_date
        self.end_date = end_date
        self.executor_config = executor_config or {}

    def _after_init(self) -> None:
        from shared.sdk.start_trigger import refuse_upstream
        from shared.sdk.xcom_arg import iter_xcom_references

        if self.start_trigger_args is not None:
            refuse_upstream(self._init_kwargs, self.task_id, f"{type(self).__name__}()")
        for ref in iter_xcom_references(self._init_kwargs):
            self.set_upstream(ref.operator)

    # --- the work -----------------------------------------------------------
    def pre_execute(self, context: dict) -> None:
        """Called right before ``execute`` (and before a resumed ``next_method``), as in Airflow."""

    def execute(self, context: dict) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement execute(context)")

    def post_execute(self, context: dict, result: Any = None) -> None:
        """Called right after ``execute`` returned ``result``, before it is pushed as XCom."""

    def defer(self, *, trigger: Any, method_name: str, kwargs: dict | None = None,
              timeout: timedelta | float | None = None) -> None:
        """Suspend this try until ``trigger`` fires, then call ``method_name``."""
        raise TaskDeferred(trigger=trigger, method_name=method_name, kwargs=kwargs, timeout=timeout)

    def resume_execution(self, next_method: str, next_kwargs: dict | None, context: dict) -> Any:
        """Called by the worker after a trigger fired (or failed: ``__fail__``)."""
        from shared.sdk.exceptions import TaskDeferralError, TaskDeferralTimeout

        next_kwargs = dict(next_kwargs or {})
        if next_method == "__fail__":
            error = next_kwargs.get("error", "Unknown")
            traceback = next_kwargs.get("traceback")
            cls = TaskDeferralTimeout if error == "Trigger timeout" else TaskDeferralError
            message = str(error)
            if traceback:
                message += "\n" + "".join(traceback)
            raise cls(message)
        method = getattr(self, next_method)
        return method(context, **next_kwargs)

    def render_template_fields(self, context: dict, jinja_env: Any = None) -> None:
        from shared.sdk.templating import render_field

        if getattr(self, "_templates_rendered", False):
            return
        for field in self.template_fields:
            value = getattr(self, field, None)
            if isinstance(value, str) and value.endswith(tuple(self.template_ext)):
                value = self._template_file(value)
            if value is not None:
                setattr(self, field, render_field(self, field, value, context))

    def _template_file(self, name: str) -> str:
        """A template field naming a file with one of ``template_ext``: that file's text.

        Looked up, as in Airflow, beside the DAG file and then in the DAG's
        ``template_searchpath``. A missing file fails the try, naming where it looked.
        """
        import os

        dag = self.dag
        folders = [os.path.dirname(dag.fileloc)] if dag is not None and dag.fileloc else []
        extra = getattr(dag, "template_searchpath", None) or []
        folders += [extra] if isinstance(extra, str) else list(extra)
        for folder in folders:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    return f.read()
        raise FileNotFoundError(f"template {name!r} of task {self.task_id!r} not found in "
                                f"{folders} (a command ending in a space is not a file)")

    # --- mapping --------------------------------------------------------------
    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        from shared.sdk.mapped import OperatorPartial

        return OperatorPartial(cls, kwargs)

    # --- the worker's fresh copy ---------------------------------------------
    def fresh_copy(self) -> BaseOperator:
        """Run ``__init__`` again with the original arguments (a clean object per try)."""
        return _build_detached(type(self), self, dict(self._init_kwargs))


def _build_detached(cls: type, template: AbstractOperator, kwargs: dict[str, Any]) -> BaseOperator:
    """Build an operator outside its DAG, taking identity and edges from ``template``."""
    global _detached
    kwargs = {k: v for k, v in kwargs.items() if k not in ("dag", "task_group", "default_args")}
    group = template.task_group
    nested = group is not None and not group.is_root and group.prefix_group_id
    kwargs["task_id"] = template.task_id.rsplit(".", 1)[-1] if nested else template.task_id
    _detached += 1
    try:
        op = cls(**kwargs)
    finally:
        _detached -= 1
    op.task_id = template.task_id
    op.dag = template.dag
    op.task_group = group
    op.upstream_task_ids = set(template.upstream_task_ids)
    op.downstream_task_ids = set(template.downstream_task_ids)
    return op


def _as_timedelta(value: Any) -> timedelta | None:
    if value is None or isinstance(value, timedelta):
        return value
    return timedelta(seconds=float(value))


def chain(*tasks: Any) -> None:
    """``chain(a, [b, c], d)``: a >> [b, c] >> d; two equal-length lists pair up."""
    for up, down in zip(tasks, tasks[1:], strict=False):
        if isinstance(up, Sequence) and isinstance(down, Sequence):
            if len(up) != len(down):
                raise ValueError(
                    f"Chain not supported for different length Iterable. "
                    f"Got {len(up)} and {len(down)}."
                )
            for u, d in zip(up, down, strict=True):
                u >> d
        else:
            up >> down


def cross_downstream(from_tasks: Sequence[Any], to_tasks: Any) -> None:
    for task in from_tasks:
        task >> to_tasks


BaseOperator.__init__ = _wrap_init(BaseOperator.__init__)  # type: ignore[method-assign]
