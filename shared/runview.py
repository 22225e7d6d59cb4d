"""Reading runs for people and tools: the JSON shape of ``runs show --json``.

The shape is a contract other tools read (see the README): keep it exact.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared.sdk import serde

RUN_SQL = """
SELECT id, dag_id, run_id, state, start_date, end_date, note FROM dag_run WHERE run_id = $1
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


async def run_document(conn: asyncpg.Connection, run_id: str) -> dict | None:
    run = await conn.fetchrow(RUN_SQL, run_id)
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
