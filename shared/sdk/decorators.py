"""TaskFlow: ``@task`` turns a function into an operator whose output flows downstream."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any

from shared.sdk.dag import current_dag
from shared.sdk.operators import BashOperator, PythonOperator
from shared.sdk.task_group import current_group
from shared.sdk.xcom_arg import PlainXComArg


class DecoratedPythonOperator(PythonOperator):
    """The operator behind ``@task``: ``multiple_outputs`` pushes each dict key too."""

    custom_operator_name = "@task"

    def __init__(self, *, python_callable: Callable, multiple_outputs: bool = False,
                 **kwargs: Any):
        super().__init__(python_callable=python_callable, multiple_outputs=multiple_outputs,
                         **kwargs)

    def reenter(self, context: dict, event: Any = None, **kwargs: Any) -> Any:
        """Resume a ``@task`` that called ``defer()``: call its function again with ``event``."""
        self.op_kwargs = {**self.op_kwargs, **kwargs, "event": event}
        return self.execute(context)


def defer(*, trigger: Any, timeout: Any = None, kwargs: dict | None = None) -> typing.NoReturn:
    """Defer the running ``@task`` function until ``trigger`` fires.

    The try leaves its worker slot; when the trigger's first event comes, the
    function is called again, in the same try, with the same arguments plus
    ``event=<the event's payload>`` and ``kwargs`` (JSON): a deferring
    function takes ``event=None`` and tells the two calls apart by it.
    Operators use ``self.defer(...)`` instead.
    """
    context = get_current_context()
    op = context["task"]
    if not isinstance(op, DecoratedPythonOperator):
        raise TypeError(f"defer() is for @task functions; {type(op).__name__} "
                        f"{op.task_id!r} calls self.defer(trigger=..., method_name=...)")
    params = inspect.signature(op.python_callable).parameters.values()
    if not any(p.name == "event" or p.kind is p.VAR_KEYWORD for p in params):
        raise TypeError(f"@task {op.task_id!r} calls defer(), so its function must take an "
                        "`event` argument (None on the first call, the trigger's payload after)")
    op.defer(trigger=trigger, method_name="reenter", kwargs=kwargs, timeout=timeout)
    raise AssertionError("unreachable")


class DecoratedBashOperator(PythonOperator):
    """The operator behind ``@task.bash``: the function returns the command to run.

    As in Airflow, the returned string must be non-empty; it is rendered as a
    Jinja template against the context, then run as ``BashOperator`` runs
    ``bash_command`` (same ``env``, ``cwd``, ``skip_on_exit_code`` ...).
    """

    custom_operator_name = "@task.bash"
    template_fields: Sequence[str] = ("templates_dict", "op_args", "op_kwargs", "env", "cwd")
    run_command = BashOperator.run_command

    def __init__(self, *, python_callable: Callable, multiple_outputs: bool = False,
                 env: dict[str, str] | None = None, append_env: bool = False,
                 output_encoding: str = "utf-8", skip_on_exit_code: int | list[int] | None = 99,
                 cwd: str | None = None, output_processor: Callable[[str], Any] | None = None,
                 **kwargs: Any):
        super().__init__(python_callable=python_callable, **kwargs)
        self.bash_command = ""
        self.env, self.append_env, self.cwd = env, append_env, cwd
        self.output_encoding = output_encoding
        if isinstance(skip_on_exit_code, int):
            skip_on_exit_code = [skip_on_exit_code]
        self.skip_on_exit_code = list(skip_on_exit_code or [])
        self.output_processor = output_processor or (lambda out: out)

    def execute(self, context: dict) -> Any:
        from shared.sdk.templating import render_string

        command = super().execute(context)
        if not isinstance(command, str) or not command.strip():
            raise TypeError("The returned value from the TaskFlow callable must be a non-empty "
                            "string.")
        self.bash_command = render_string(command, context)
        return self.run_command(self.bash_command, context)


def _infers_multiple_outputs(fn: Callable) -> bool:
    try:
        ret = typing.get_type_hints(fn).get("return")
    except Exception:
        return False
    if ret is None:
        return False
    origin = typing.get_origin(ret) or ret
    if origin in (dict, typing.Dict):  # noqa: UP006
        return True
    return typing.is_typeddict(ret) if hasattr(typing, "is_typeddict") else False


class TaskDecorator:
    """A function wrapped by ``@task``; calling it (inside a DAG) adds a task."""

    def __init__(self, fn: Callable, operator_class: type = DecoratedPythonOperator,
                 **kwargs: Any):
        functools.update_wrapper(self, fn)
        self.function = fn
        self.operator_class = operator_class
        self.kwargs = kwargs

    def _task_id(self, kwargs: dict) -> str:
        base = kwargs.get("task_id") or self.function.__name__
        group = kwargs.get("task_group") or current_group()
        dag = kwargs.get("dag") or current_dag() or (group.dag if group else None)
        if dag is None:
            return base
        full = group.child_id(base) if group is not None else base
        unique = dag.unique_task_id(full)
        return unique.rsplit(".", 1)[-1] if group is not None and not group.is_root and group.prefix_group_id else unique

    def operator_options(self) -> dict[str, Any]:
        """Operator arguments of the task this call adds (unique task_id included)."""
        options = dict(self.kwargs)
        if "multiple_outputs" not in options:
            options["multiple_outputs"] = _infers_multiple_outputs(self.function)
        options["task_id"] = self._task_id(options)
        return options

    def __call__(self, *args: Any, **kwargs: Any) -> PlainXComArg:
        op = self.operator_class(python_callable=self.function, op_args=list(args),
                                 op_kwargs=kwargs, **self.operator_options())
        return PlainXComArg(op)

    def override(self, **kwargs: Any) -> TaskDecorator:
        return TaskDecorator(self.function, self.operator_class, **{**self.kwargs, **kwargs})

    def partial(self, **kwargs: Any) -> Any:
        from shared.sdk.mapped import DecoratedPartial

        return DecoratedPartial(self, kwargs)

    def expand(self, **kwargs: Any) -> Any:
        return self.partial().expand(**kwargs)

    def expand_kwargs(self, arg: Any, *, strict: bool = True) -> Any:
        return self.partial().expand_kwargs(arg, strict=strict)


class _TaskNamespace:
    """``@task``, ``@task(...)``, ``@task.python`` and ``@task.bash``."""

    def __call__(self, python_callable: Callable | None = None, **kwargs: Any) -> Any:
        if python_callable is not None and callable(python_callable) and not kwargs:
            return TaskDecorator(python_callable)
        if python_callable is not None:
            return TaskDecorator(python_callable, **kwargs)
        return lambda fn: TaskDecorator(fn, **kwargs)

    python = __call__

    def bash(self, python_callable: Callable | None = None, **kwargs: Any) -> Any:
        """``@task.bash``: the function returns a bash command, run like ``BashOperator``."""
        if python_callable is not None:
            return TaskDecorator(python_callable, DecoratedBashOperator, **kwargs)
        return lambda fn: TaskDecorator(fn, DecoratedBashOperator, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"@task.{name} is not supported by Sluice (supported: @task, "
                             "@task.python, @task.bash)")


task = _TaskNamespace()


class Context(typing.TypedDict, total=False):
    """The keys of a running task's context, for annotations (``def execute(self, context: Context)``).

    At run time the context is a plain dict with these keys (and whatever the
    task body adds, e.g. for ``map_index_template``).
    """

    dag: Any
    task: Any
    ti: Any
    task_instance: Any
    run_id: str
    dag_run: Any
    logical_date: Any
    execution_date: Any
    ds: str
    ds_nodash: str
    ts: str
    ts_nodash: str
    data_interval_start: Any
    data_interval_end: Any
    params: dict[str, Any]
    map_index: int
    run_type: str
    try_number: int


def get_current_context() -> Context:
    """The running task's context (inside a task body only)."""
    from shared.sdk import runtime

    if runtime.current_context is None:
        raise RuntimeError("get_current_context() works only inside a running task")
    return runtime.current_context


def _signature_ok(fn: Callable) -> None:
    inspect.signature(fn)
