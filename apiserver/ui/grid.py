"""The grid: runs x tasks, a mapped task summarised per state in one cell.

``summarize`` is pure (the aggregate rows of ``ui_grid_cells`` in, cells out);
``read_grid`` is the one read: the runs, then one aggregate over their
instances, so a 10,000-instance mapped run costs one grouped index scan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg

from apiserver.ui.graph import grid_rows
from apiserver.ui.sql import q
from shared.serialization import DagSpec

# Which state a summary shows: the first one present (Airflow's grid order; None = no status).
PRIORITY: tuple[str | None, ...] = (
    "failed", "upstream_failed", "up_for_retry", "up_for_reschedule", "queued", "scheduled",
    "deferred", "running", "restarting", None, "success", "skipped", "removed")


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="microseconds")


def overall(states: Iterable[str | None]) -> str | None:
    """The state a summary of several instances (or tasks) shows."""
    present = set(states)
    for state in PRIORITY:
        if state in present:
            return state
    return None


def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, dict]]:
    """Cells by run and task from (run_pk, task_id, state, n, ...) aggregate rows.

    A cell has the state it shows, the count per state (``"none"`` for no
    status), the instance total, whether it was expanded, the highest try,
    its time span and, for an unmapped instance, its label.
    """
    cells: dict[int, dict[str, dict]] = {}
    for row in rows:
        cell = cells.setdefault(row["run_pk"], {}).setdefault(row["task_id"], {
            "counts": {}, "total": 0, "mapped": False, "try_number": 0,
            "start_date": None, "end_date": None, "label": None})
        cell["counts"][row["state"] or "none"] = row["n"]
        cell["total"] += row["n"]
        cell["mapped"] = cell["mapped"] or row["mapped"]
        cell["try_number"] = max(cell["try_number"], row["try_number"] or 0)
        cell["start_date"] = _earliest(cell["start_date"], iso(row["start_date"]))
        cell["end_date"] = _latest(cell["end_date"], iso(row["end_date"]))
        cell["label"] = cell["label"] or row.get("label")
    for by_task in cells.values():
        for cell in by_task.values():
            cell["state"] = overall(None if s == "none" else s for s in cell["counts"])
    return cells


def _earliest(a: str | None, b: str | None) -> str | None:
    return min(x for x in (a, b) if x) if (a or b) else None


def _latest(a: str | None, b: str | None) -> str | None:
    return max(x for x in (a, b) if x) if (a or b) else None


def add_group_cells(cells: dict[int, dict[str, dict]], spec: DagSpec) -> None:
    """Give each task group a cell per run: the state its member tasks' cells show."""
    members: dict[str, list[str]] = {}
    for task in spec.tasks:
        gid = task.group_id
        while gid:
            members.setdefault(gid, []).append(task.task_id)
            gid = gid.rpartition(".")[0]
    for by_task in cells.values():
        for gid, task_ids in members.items():
            states = [by_task[t]["state"] for t in task_ids if t in by_task]
            if states:
                by_task[gid] = {"group": True, "state": overall(states)}


def run_json(row: Mapping[str, Any]) -> dict:
    return {"run_pk": row["run_pk"], "run_id": row["run_id"], "run_type": row["run_type"],
            "state": row["state"], "logical_date": iso(row["logical_date"]),
            "start_date": iso(row["start_date"]), "end_date": iso(row["end_date"]),
            "conf": row["conf"], "note": row["note"]}


async def read_grid(conn: asyncpg.Connection, spec: DagSpec, *, limit: int = 25,
                    run_id: str | None = None) -> dict:
    """The DAG's latest ``limit`` runs (or the one ``run_id``), oldest first, with cells."""
    if run_id is None:
        runs = list(reversed(await conn.fetch(q("ui_runs"), spec.dag_id, limit)))
    else:
        runs = [r for r in [await conn.fetchrow(q("ui_run"), spec.dag_id, run_id)] if r]
    cells = summarize(await conn.fetch(q("ui_grid_cells"), [r["run_pk"] for r in runs]))
    add_group_cells(cells, spec)
    return {"dag_id": spec.dag_id, "rows": grid_rows(spec),
            "runs": [run_json(r) for r in runs],
            "cells": {str(pk): by_task for pk, by_task in cells.items()}}
