"""``DAG``, ``@dag`` and the context that collects tasks while a file loads."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from shared.sdk.exceptions import AirflowDagCycleException, AirflowException, DuplicateTaskIdFound

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


KEY_REGEX = re.compile(r"[\w.-]+")
_NOTSET: Any = object()  # an argument the caller did not pass


def validate_key(k: Any, max_length: int = 250) -> None:
    """Refuse a dag_id Airflow refuses, with Airflow's messages.

    A key is made of alphanumerics, dashes, dots and underscores, at most
    ``max_length`` long: it names log folders and URLs, so ``/`` or a space
    would break them later instead of now.
    """
    if not isinstance(k, str):
        raise TypeError(f"The key has to be a string and is {type(k)}:{k}")
    if len(k) > max_length:
        raise AirflowException(f"The key has to be less than {max_length} characters")
    if not KEY_REGEX.fullmatch(k):
        raise AirflowException(
            f"The key {k!r} has to be made of alphanumeric characters, dashes, "
            f"dots and underscores exclusively"
        )


def _is_set(value: Any) -> bool:
    """Airflow's ``at_most_one`` test: a value counts when passed and truthy."""
    return value is not _NOTSET and bool(value)


def _resolve_schedule(schedule: Any, schedule_interval: Any) -> Any:
    """``schedule=``, else Airflow 2's ``schedule_interval=`` (its alias), else None.

    Both given (and truthy) is refused with Airflow's message; an explicit
    ``schedule`` wins over ``schedule_interval``, as in Airflow 2.
    """
    if _is_set(schedule) and _is_set(schedule_interval):
        raise ValueError(
            "At most one allowed for args 'schedule_interval', 'timetable', and 'schedule'.")
    if schedule is not _NOTSET:
        return schedule
    return None if schedule_interval is _NOTSET else schedule_interval


def _utc(value: datetime | None, what: str) -> datetime | None:
    """A plain ``datetime`` in UTC (naive means UTC), as Airflow stores DAG dates.

    Any ``datetime`` subclass is accepted (``pendulum.DateTime`` in any time
    zone); the result is a stdlib ``datetime`` so serialization never meets it.
    """
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    v = value.astimezone(UTC)
    return datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond,
                    tzinfo=UTC)


def _timezone_of(value: datetime | None) -> tzinfo:
    """The DAG's time zone: its start_date's (Airflow's ``DAG.timezone``), else UTC."""
    if value is None or value.utcoffset() is None:
        return UTC
    return value.tzinfo


class DAG:
    """A set of tasks and their dependencies, plus how and when it runs."""

    def __init__(self, dag_id: str, description: str | None = None, *,
                 schedule: Any = _NOTSET, schedule_interval: Any = _NOTSET,
                 start_date: datetime | None = None,
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
            raise TypeError(f"DAG {dag_id!r}: argument(s) {sorted(unsupported)} not supported "
                            f"by Sluice")
        from shared.schedules import parse_schedule
        from shared.sdk.task_group import TaskGroup

        start_date = start_date or (default_args or {}).get("start_date")
        end_date = end_date or (default_args or {}).get("end_date")
        with _naming_dag(dag_id):
            validate_key(dag_id)
            schedule = _resolve_schedule(schedule, schedule_interval)
            self.timetable = parse_schedule(schedule)
            self.start_date = _utc(start_date, "start_date")
            self.end_date = _utc(end_date, "end_date")
        self.dag_id = dag_id
        self.description = description
        self.schedule = self.schedule_interval = schedule
        self.timezone = _timezone_of(start_date)
        self.catchup = catchup
        self.default_args = dict(default_args or {})
        self.params = dict(params or {})
        self.max_active_runs = max_active_runs
        self.max_active_tasks = max_active_tasks
        self.dagrun_timeout = dagrun_timeout
        self.tags = list(tags or [])
        self.doc_md = doc_md
        self.render_template_as_native_obj = render_template_as_native_obj
        self.template_searchpath = template_searchpath  # where template files are found
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

    def check_cycle(self) -> None:
        """Raise ``AirflowDagCycleException`` if the dependencies loop (the loader calls it).

        The message is Airflow's (``Cycle detected in DAG: <dag_id>. Faulty
        task: <task_id>``, the task whose downstream closes the loop); a note
        spells the loop out. A cycle would otherwise only show as a run that
        deadlocks.
        """
        cycle = find_cycle(self.task_dict)
        if cycle:
            exc = AirflowDagCycleException(
                f"Cycle detected in DAG: {self.dag_id}. Faulty task: {cycle[-2]}")
            exc.add_note("cycle: " + " >> ".join(cycle))
            raise exc


def find_cycle(task_dict: dict[str, Any]) -> list[str]:
    """One dependency loop as task ids ``[a, b, ..., a]``, or ``[]`` when there is none.

    An iterative depth-first walk (no recursion limit on long chains), in
    task order and sorted downstream order so the same file names the same loop.
    """
    done: set[str] = set()
    for root in task_dict:
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root}
        pending = [iter(sorted(task_dict[root].downstream_task_ids))]
        while pending:
            child = next(pending[-1], None)
            if child is None:
                on_path.discard(path[-1])
                done.add(path.pop())
                pending.pop()
            elif child in on_path:
                return path[path.index(child):] + [child]
            elif child not in done and child in task_dict:
                path.append(child)
                on_path.add(child)
                pending.append(iter(sorted(task_dict[child].downstream_task_ids)))
    return []


@contextmanager
def _naming_dag(dag_id: Any) -> Iterator[None]:
    """Note on a mistake in ``DAG(...)`` arguments which DAG made it.

    The exception's own text stays Airflow's; the note reaches the file's
    import error (``shared.dagbag``).
    """
    try:
        yield
    except (TypeError, ValueError, AirflowException) as exc:
        note = f"DAG {dag_id!r}"
        if note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)
        raise


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
