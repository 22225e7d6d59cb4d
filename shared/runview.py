"""Reading runs for people and tools: the JSON shape of ``runs show --json``.

The shape is a contract other tools read (see the README): keep it exact.
A run is identified by ``(dag_id, run_id)``, as in Airflow; a run id alone
names a run only while one DAG has it (``find_run``).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared.db import q
from shared.sdk import serde

RUN_SQL = """
SELECT id, dag_id, run_id, state, start_date, end_date, note FROM dag_run WHERE id = $1
"""
TIS_SQL = """
SELECT ti.task_id, ti.map_index, ti.label, ti.state, ti.try_number, ti.start_date, ti.end_date,
       ti.next_method, ti.trigger_timeout, ti.error, t.classpath AS trigger_classpath,
       t.kwargs -> 'moment' ->> 'value' AS trigger_moment,
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


def _plain(value: Any) -> Any:
    """A stored XCom as plain JSON (tuples as lists, dates as ISO strings)."""
    return json.loads(json.dumps(serde.from_jsonable(value), default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)


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
    """The run's ``--json`` document (``doc``), with what only people see (``extra``, ``note``)."""
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
                      "trigger_moment": row["trigger_moment"],
                      "trigger_timeout": iso(row["trigger_timeout"])})
    doc = {"dag_id": run["dag_id"], "run_id": run["run_id"], "state": run["state"],
           "start_date": iso(run["start_date"]), "end_date": iso(run["end_date"]), "tasks": tasks}
    return {"doc": doc, "extra": extra, "note": run["note"]}


def state_counts(tasks: list[dict]) -> Counter:
    return Counter(t["state"] or "none" for t in tasks)
