"""``DAG``, ``@dag`` and the context that collects tasks while a file loads."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.sdk.exceptions import DuplicateTaskIdFound

if TYPE_CHECKING:
    from shared.sdk.baseoperator import BaseOperator
    from shared.sdk.task_group import TaskGroup

_dag_stack: list[DAG] = []
_loaded: list[DAG] = []  # every DAG built since the loader last reset it


def current_dag() -> DAG | None:
    return _dag_stack[-1] if _dag_stack else None


def collect_loaded() -> list[DAG]:
    """DAGs built since the last call (the DAG loader's hook)."""
    out = list(_loaded)
    _loaded.clear()
    return out


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class DAG:
    """A set of tasks and their dependencies, plus how and when it runs."""

    def __init__(self, dag_id: str, description: str | None = None, *,
                 schedule: Any = None, start_date: datetime | None = None,
                 end_date: datetime | None = None, catchup: bool = False,
                 default_args: dict | None = None, params: dict | None = None,
                 max_active_runs: int = 16, max_active_tasks: int = 16,
                 dagrun_timeout: timedelta | None = None, tags: list[str] | None = None,
                 doc_md: str | None = None, owner_links: dict | None = None,
                 render_template_as_native_obj: bool = False,
                 template_searchpath: Any = None, user_defined_macros: dict | None = None,
                 user_defined_filters: dict | None = None, is_paused_upon_creation: bool | None = None,
                 fileloc: str | None = None, **unsupported: Any):
        if unsupported:
            raise TypeError(f"DAG {dag_id!r}: unsupported argument(s) {sorted(unsupported)}")
        from shared.schedules import parse_schedule
        from shared.sdk.task_group import TaskGroup

        self.dag_id = dag_id
        self.description = description
        self.schedule = schedule
        self.timetable = parse_schedule(schedule)
        self.start_date = _utc(start_date or (default_args or {}).get("start_date"))
        self.end_date = _utc(end_date or (default_args or {}).get("end_date"))
        self.catchup = catchup
        self.default_args = dict(default_args or {})
        self.params = dict(params or {})
        self.max_active_runs = max_active_runs
        self.max_active_tasks = max_active_tasks
        self.dagrun_timeout = dagrun_timeout
        self.tags = list(tags or [])
        self.doc_md = doc_md
        self.render_template_as_native_obj = render_template_as_native_obj
        self.user_defined_macros = user_defined_macros or {}
        self.user_defined_filters = user_defined_filters or {}
        self.is_paused_upon_creation = is_paused_upon_creation
        self.fileloc = fileloc or _caller_file()
        self.task_dict: dict[str, BaseOperator] = {}
        self.task_group: TaskGroup = TaskGroup.root(self)
        self._task_name_counts: dict[str, int] = {}
        _loaded.append(self)

    def __repr__(self) -> str:
        return f"<DAG: {self.dag_id}>"

    def __enter__(self) -> DAG:
        _dag_stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _dag_stack.pop()

    @property
    def tasks(self) -> list[BaseOperator]:
        return list(self.task_dict.values())

    @property
    def task_ids(self) -> list[str]:
        return list(self.task_dict)

    def get_task(self, task_id: str) -> BaseOperator:
        try:
            return self.task_dict[task_id]
        except KeyError:
            raise KeyError(f"task {task_id!r} not found in DAG {self.dag_id!r}") from None

    def has_task(self, task_id: str) -> bool:
        return task_id in self.task_dict

    def add_task(self, task: BaseOperator) -> None:
        if task.task_id in self.task_dict and self.task_dict[task.task_id] is not task:
            raise DuplicateTaskIdFound(
                f"Task id '{task.task_id}' has already been added to the DAG {self.dag_id!r}"
            )
        self.task_dict[task.task_id] = task
        task.dag = self

    def unique_task_id(self, base: str) -> str:
        """Airflow's TaskFlow naming: ``f``, ``f__1``, ``f__2``..."""
        if base not in self.task_dict:
            return base
        n = self._task_name_counts.get(base, 0)
        while True:
            n += 1
            candidate = f"{base}__{n}"
            if candidate not in self.task_dict:
                self._task_name_counts[base] = n
                return candidate

    @property
    def roots(self) -> list[BaseOperator]:
        return [t for t in self.tasks if not t.upstream_task_ids]

    @property
    def leaves(self) -> list[BaseOperator]:
        return [t for t in self.tasks if not t.downstream_task_ids]

    def test(self, **kwargs: Any) -> Any:
        raise NotImplementedError("use `sluice dags test DAG_ID`")


def _caller_file() -> str:
    for frame in inspect.stack()[2:]:
        name = frame.filename
        if "/shared/sdk/" not in name and "importlib" not in name:
            return name
    return "<unknown>"


def dag(dag_id: str | Callable | None = None, **dag_kwargs: Any) -> Any:
    """``@dag`` / ``@dag(...)``: calling the decorated function builds the DAG.

    The function's parameters become DAG ``params`` with their defaults, and
    inside it they are references to those params (rendered per run).
    """

    def wrap(fn: Callable) -> Callable[..., DAG]:
        @functools.wraps(fn)
        def factory(*args: Any, **kwargs: Any) -> DAG:
            sig = inspect.signature(fn)
            bound = sig.bind_partial(*args, **kwargs)
            bound.apply_defaults()
            params = dict(dag_kwargs.get("params") or {})
            params.update({k: v for k, v in bound.arguments.items()})
            options = {**dag_kwargs, "params": params}
            options.setdefault("description", inspect.getdoc(fn))
            options.setdefault("fileloc", inspect.getsourcefile(fn))
            the_dag = DAG(dag_id if isinstance(dag_id, str) else fn.__name__, **options)
            with the_dag:
                from shared.sdk.templating import ParamRef
                fn(**{k: ParamRef(k) for k in bound.arguments})
            return the_dag

        return factory

    if callable(dag_id):
        fn, dag_id = dag_id, None
        return wrap(fn)
    return wrap
