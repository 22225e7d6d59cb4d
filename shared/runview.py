"""Reading runs for people and tools: the JSON shape of ``runs show --json``.

The shape is a contract other tools read (see the README): keep it exact.
A run is identified by ``(dag_id, run_id)``, as in Airflow; a run id alone
names a run only while one DAG has it (``find_run``).
"""

from __future__ import annotations

import json
from collections import Counter, deque
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared import serde
from shared.db import q

# ``structure``: each task's id, upstreams and group, in the DAG's own task order (what
# ``graph_order`` needs; null for a DAG that is no longer stored).
RUN_SQL = """
SELECT r.id, r.dag_id, r.run_id, r.state, r.start_date, r.end_date, r.note,
       (SELECT json_agg(json_build_object('task_id', t.value ->> 'task_id',
                                          'upstream', t.value -> 'upstream',
                                          'group_id', t.value ->> 'group_id') ORDER BY t.n)
          FROM dag d, json_array_elements(d.serialized -> 'tasks') WITH ORDINALITY AS t (value, n)
         WHERE d.dag_id = r.dag_id) AS structure
  FROM dag_run r WHERE r.id = $1
"""
TIS_SQL = """
SELECT ti.task_id, ti.map_index, ti.label, ti.state, ti.try_number, ti.start_date, ti.end_date,
       ti.next_method, ti.trigger_timeout, ti.error, t.classpath AS trigger_classpath,
       (t.kwargs -> 'moment')::text AS trigger_moment,
       x.value::text AS return_value
  FROM task_instance ti
  LEFT JOIN xcom x ON x.run_pk = ti.run_pk AND x.task_id = ti.task_id
                  AND x.map_index = ti.map_index AND x.key = 'return_value'
  LEFT JOIN trigger t ON t.id = ti.trigger_id
 WHERE ti.run_pk = $1
 ORDER BY ti.task_id, ti.map_index
"""


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds")


# The Task SDK's serde wraps what JSON has no type for as {"__classname__", "__version__",
# "__data__"}; read without importing Airflow (the CLI and the api-server stay lean).
_SDK_CLASS = "__classname__"
_SEQUENCES = {"builtins.tuple", "builtins.set", "builtins.frozenset", "builtins.list"}
_DATETIMES = {"datetime.datetime", "pendulum.datetime.DateTime"}


def _plain(value: Any) -> Any:
    """A stored XCom as plain JSON: tuples and sets as lists, datetimes and dates as ISO strings,
    timedeltas as seconds; both the Task SDK's wrappers and Sluice's own tags are read."""
    return json.loads(json.dumps(_unwrap(serde.from_jsonable(value)), default=_default))


def _unwrap(value: Any) -> Any:
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    if not isinstance(value, dict):
        return value
    if _SDK_CLASS not in value or "__data__" not in value:
        return {k: _unwrap(v) for k, v in value.items()}
    name, data = value[_SDK_CLASS], value["__data__"]
    if name in _SEQUENCES:
        return [_unwrap(v) for v in data]
    if name in _DATETIMES and isinstance(data, dict) and "timestamp" in data:
        moment = datetime.fromtimestamp(data["timestamp"], UTC)
        return iso(moment) if data.get("tz") is not None else moment.replace(tzinfo=None).isoformat()
    return _unwrap(data)  # date (ISO text), timedelta (seconds), Decimal (number), others


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)


def _moment(stored: str | None) -> str | None:
    """A date-time trigger's ``moment`` kwarg as text, whichever encoding stored it."""
    if stored is None:
        return None
    value = _plain(json.loads(stored))
    return value if isinstance(value, str) else None


class RunLookupError(LookupError):
    """A run id that names no run, or more than one: the message is one line for the user."""


class RunNotFound(RunLookupError):
    pass


class AmbiguousRunId(RunLookupError):
    pass


def _dag_list(dag_ids: list[str], shown: int = 5) -> str:
    names = ", ".join(repr(d) for d in dag_ids[:shown])
    return names + (f" and {len(dag_ids) - shown} more" if len(dag_ids) > shown else "")


async def find_run(conn: asyncpg.Connection, run_id: str, dag_id: str | None = None) -> int:
    """The primary key of run ``run_id`` of ``dag_id`` (of whichever DAG has it when None).

    Raises ``RunNotFound``, or ``AmbiguousRunId`` when several DAGs have a run of
    that id and no DAG was given.
    """
    rows = await conn.fetch(q("find_runs"), run_id, dag_id)
    if not rows:
        of_dag = f" of DAG {dag_id!r}" if dag_id is not None else ""
        raise RunNotFound(f"run {run_id!r}{of_dag} not found")
    if len(rows) > 1:
        raise AmbiguousRunId(
            f"run id {run_id!r} is ambiguous: DAGs {_dag_list([r['dag_id'] for r in rows])} "
            "each have a run of that id; give the DAG too: DAG_ID RUN_ID")
    return rows[0]["id"]


async def run_document(conn: asyncpg.Connection, run_id: str,
                       dag_id: str | None = None) -> dict | None:
    """``run_document_at`` for run ``run_id`` (of ``dag_id``); None when there is none."""
    try:
        run_pk = await find_run(conn, run_id, dag_id)
    except RunNotFound:
        return None
    return await run_document_at(conn, run_pk)


async def run_document_at(conn: asyncpg.Connection, run_pk: int) -> dict | None:
    """The run's ``--json`` document (``doc``), with what only people see (``extra``, ``note``,
    and ``order``: its task ids in graph order)."""
    run = await conn.fetchrow(RUN_SQL, run_pk)
    if run is None:
        return None
    tasks = []
    extra = []
    for row in await conn.fetch(TIS_SQL, run["id"]):
        value = None if row["return_value"] is None else _plain(json.loads(row["return_value"]))
        tasks.append({
            "task_id": row["task_id"], "map_index": row["map_index"], "label": row["label"],
            "state": row["state"], "try_number": row["try_number"], "return_value": value,
            "start_date": iso(row["start_date"]), "end_date": iso(row["end_date"]),
        })
        extra.append({"error": row["error"], "trigger": row["trigger_classpath"],
                      "trigger_moment": _moment(row["trigger_moment"]),
                      "trigger_timeout": iso(row["trigger_timeout"])})
    doc = {"dag_id": run["dag_id"], "run_id": run["run_id"], "state": run["state"],
           "start_date": iso(run["start_date"]), "end_date": iso(run["end_date"]), "tasks": tasks}
    order = graph_order(run["structure"] or [], {t["task_id"] for t in tasks})
    return {"doc": doc, "extra": extra, "note": run["note"], "order": order}


def state_counts(tasks: list[dict]) -> Counter:
    return Counter(t["state"] or "none" for t in tasks)


def graph_order(structure: list[dict], present: set[str]) -> list[str]:
    """The task ids of ``present`` as Airflow's grid lists them: by the DAG's structure.

    ``structure`` is the DAG's tasks in its own order, each with ``task_id``,
    ``upstream`` and ``group_id``. In each task group (the DAG first) the children,
    tasks and groups, are ordered as Airflow's ``TaskGroup.topological_sort``: by
    pass, then creation order, where a child's pass is the first sweep in creation
    order that finds its upstreams (a group's: those of its roots) taken. A group's
    tasks stay together; a group is nested in the group whose id prefixes its own
    (``outer.inner``). Tasks the DAG no longer has come last, by name.
    """
    children = _group_tree(structure)
    upstream = {t["task_id"]: set(t.get("upstream") or ()) for t in structure}
    known = [tid for tid in _flatten(children, upstream, None) if tid in present]
    return known + sorted(present - set(known))


def _group_tree(structure: list[dict]) -> dict[str | None, list[tuple[bool, str]]]:
    """Each group's children in creation order: ``(is_group, id)``; the DAG is ``None``."""
    children: dict[str | None, list[tuple[bool, str]]] = {None: []}
    for task in structure:
        parent = None
        for group in _group_chain(task.get("group_id")):
            if group not in children:
                children[group] = []
                children[parent].append((True, group))
            parent = group
        children[parent].append((False, task["task_id"]))
    return children


def _group_chain(group_id: str | None) -> list[str]:
    """``a.b`` -> ``["a", "a.b"]``: the groups a task of group ``a.b`` is in, outermost first."""
    parts = group_id.split(".") if group_id else []
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _flatten(children: dict, upstream: dict[str, set[str]], group: str | None) -> list[str]:
    nodes = children[group]
    members = [_tasks_in(children, node) for node in nodes]
    owner = {tid: i for i, tids in enumerate(members) for tid in tids}
    deps = [{owner[u] for tid in _roots(tids, upstream) for u in upstream[tid]
             if owner.get(u, i) != i} for i, tids in enumerate(members)]
    order: list[str] = []
    for i in _pass_order(deps):
        is_group, node = nodes[i]
        order += _flatten(children, upstream, node) if is_group else [node]
    return order


def _tasks_in(children: dict, node: tuple[bool, str]) -> list[str]:
    is_group, name = node
    if not is_group:
        return [name]
    return [tid for child in children[name] for tid in _tasks_in(children, child)]


def _roots(tids: list[str], upstream: dict[str, set[str]]) -> list[str]:
    """The tasks of ``tids`` with no upstream among them (Airflow's ``get_roots``)."""
    inside = set(tids)
    return [tid for tid in tids if upstream[tid].isdisjoint(inside)]


def _pass_order(deps: list[set[int]]) -> list[int]:
    """Indexes by (pass, index): a child waits for the pass after that of an upstream
    created after it, and for the same pass as one created before (Airflow's pass
    numbering). Children in a cycle between groups (not between tasks) come last."""
    waiting = [len(d) for d in deps]
    after: list[list[int]] = [[] for _ in deps]
    for i, d in enumerate(deps):
        for j in d:
            after[j].append(i)
    pass_of = [0] * len(deps)
    ready = deque(i for i, n in enumerate(waiting) if n == 0)
    while ready:
        i = ready.popleft()
        pass_of[i] = max([1, *(pass_of[j] + (j > i) for j in deps[i])])
        for k in after[i]:
            waiting[k] -= 1
            if waiting[k] == 0:
                ready.append(k)
    last = len(deps) + 1
    return sorted(range(len(deps)), key=lambda i: (pass_of[i] or last, i))
