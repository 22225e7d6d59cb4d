"""The run commands of the CLI: trigger (and wait), clear, list, show."""

from __future__ import annotations

import json
import sys

import anyio
import asyncpg
from rich.console import Console
from rich.live import Live
from rich.table import Column, Table

from shared import bus
from shared.config import Settings, load_settings
from shared.db import _init_connection
from shared.messages import RunChanged
from shared.runview import run_document, state_counts

FINISHED = ("success", "failed")


async def _connect(settings: Settings) -> asyncpg.Connection:
    db_url, _ = settings.require_urls()
    conn = await asyncpg.connect(db_url)
    await _init_connection(conn)
    return conn


async def trigger(settings: Settings, dag_id: str, conf: dict, wait: bool, as_json: bool,
                  timeout: float) -> int:
    from scheduler.runs import create_manual_run

    conn = await _connect(settings)
    try:
        if await conn.fetchval("SELECT 1 FROM dag WHERE dag_id = $1 AND is_active", dag_id) is None:
            print(f"DAG {dag_id!r} not found (is the scheduler running on this DAGs folder? "
                  "see `sluice dags list`)", file=sys.stderr)
            return 2
        run_pk, run_id = await create_manual_run(conn, dag_id, conf)
        await _wake_scheduler(settings, run_pk)
        return await _report(conn, run_id, f"created run {run_id}", wait, as_json, timeout)
    finally:
        await conn.close()


async def clear(settings: Settings, run_id: str, only_failed: bool, wait: bool, as_json: bool,
                timeout: float) -> int:
    """Clear a finished run so that it runs again (see ``shared.clear``)."""
    from shared.clear import ClearError, clear_run

    conn = await _connect(settings)
    try:
        try:
            done = await clear_run(conn, run_id, only_failed=only_failed)
        except ClearError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        await _wake_scheduler(settings, done["run_pk"])
        summary = (f"cleared {done['cleared']} task instances of run {run_id} "
                   f"({done['removed']} removed, {done['added']} added)")
        return await _report(conn, run_id, summary, wait, as_json, timeout)
    finally:
        await conn.close()


async def _wake_scheduler(settings: Settings, run_pk: int) -> None:
    _, redis_url = settings.require_urls()
    redis = bus.connect(redis_url)
    try:
        await bus.publish(redis, [(bus.Streams(settings.stream_prefix).events,
                                   RunChanged(run_pk=run_pk))])
    finally:
        await redis.aclose()


async def _report(conn: asyncpg.Connection, run_id: str, summary: str, wait: bool,
                  as_json: bool, timeout: float) -> int:
    """Print the run (or ``summary``); with ``wait``, its outcome as the exit code."""
    if not wait:
        if as_json:
            print(json.dumps((await run_document(conn, run_id))["doc"]))
        else:
            print(summary)
        return 0
    state = await _wait(conn, run_id, timeout, live=not as_json and sys.stdout.isatty())
    found = await run_document(conn, run_id)
    if as_json:
        print(json.dumps(found["doc"]))
    else:
        _print_run(found)
    if state not in FINISHED:
        print(f"gave up waiting after {timeout:g}s (run is {state})", file=sys.stderr)
        return 3
    return 0 if state == "success" else 1


async def _wait(conn: asyncpg.Connection, run_id: str, timeout: float, live: bool) -> str:
    """Wait for the run to finish, showing counts by state on a terminal."""
    state = "queued"
    delay = 0.02
    with anyio.move_on_after(timeout):
        with Live(console=Console(stderr=True), transient=True, auto_refresh=False) as view:
            while True:
                found = await run_document(conn, run_id)
                state = found["doc"]["state"]
                if live:
                    view.update(_progress(found["doc"]), refresh=True)
                if state in FINISHED:
                    break
                await anyio.sleep(delay)
                delay = min(delay * 1.5, 0.5)
    return state


def _progress(doc: dict) -> Table:
    table = Table(title=f"{doc['dag_id']} {doc['run_id']}: {doc['state']}")
    table.add_column("task")
    table.add_column("states")
    by_task: dict[str, list[dict]] = {}
    for t in doc["tasks"]:
        by_task.setdefault(t["task_id"], []).append(t)
    for task_id, tis in by_task.items():
        mapped = any(t["map_index"] >= 0 for t in tis)
        name = f"{task_id} [{len(tis)}]" if mapped else task_id
        counts = state_counts(tis)
        table.add_row(name, ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return table


def _deferral_detail(extra: dict) -> str:
    """``DateTimeTrigger fires 10:00:02 times out 11:00:00``: what a deferred instance waits on."""
    parts = [(extra["trigger"] or "trigger pending").rpartition(".")[2]]
    if extra.get("trigger_moment"):
        parts.append(f"fires {extra['trigger_moment']}")
    if extra.get("trigger_timeout"):
        parts.append(f"times out {extra['trigger_timeout']}")
    return " ".join(parts)


def _print_run(found: dict) -> None:
    """The run as a table for people: one row per task instance.

    The label column shows a mapped instance's index when it has no rendered
    ``map_index_template`` (SEMANTICS §1: without a template the label is the
    index); the JSON keeps ``label`` null then (DESIGN.md: other tools read it).
    """
    doc = found["doc"]
    console = Console()
    title = f"{doc['dag_id']}  {doc['run_id']}  [bold]{doc['state']}[/bold]"
    if found.get("note"):
        title += f" ({found['note']})"
    console.print(title)
    console.print(f"started {doc['start_date']}  ended {doc['end_date']}")
    counts = state_counts(doc["tasks"])
    console.print("counts: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    table = Table("task", "state", "try", "label", "return_value",
                  Column("detail", overflow="fold"))
    for t, extra in zip(doc["tasks"], found["extra"], strict=True):
        name = t["task_id"] if t["map_index"] < 0 else f"{t['task_id']} [{t['map_index']}]"
        detail = ""
        if t["state"] == "deferred":
            detail = _deferral_detail(extra)
        elif extra["error"]:
            detail = extra["error"].splitlines()[0][:80]
        value = "" if t["return_value"] is None else json.dumps(t["return_value"])[:40]
        label = t["label"] if t["label"] is not None else str(t["map_index"]) if t["map_index"] >= 0 else ""
        table.add_row(name, t["state"] or "none", str(t["try_number"]), label, value, detail)
    console.print(table)


async def show(run_id: str, as_json: bool) -> int:
    conn = await _connect(load_settings())
    try:
        found = await run_document(conn, run_id)
    finally:
        await conn.close()
    if found is None:
        print(f"run {run_id!r} not found", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(found["doc"]))
    else:
        _print_run(found)
    return 0


async def list_runs(dag_id: str | None, limit: int, as_json: bool) -> None:
    conn = await _connect(load_settings())
    try:
        rows = await conn.fetch(
            "SELECT dag_id, run_id, state, run_type, logical_date, start_date, end_date FROM dag_run"
            " WHERE ($1::text IS NULL OR dag_id = $1) ORDER BY id DESC LIMIT $2", dag_id, limit)
    finally:
        await conn.close()
    from shared.runview import iso

    items = [{"dag_id": r["dag_id"], "run_id": r["run_id"], "state": r["state"],
              "run_type": r["run_type"], "logical_date": iso(r["logical_date"]),
              "start_date": iso(r["start_date"]), "end_date": iso(r["end_date"])} for r in rows]
    if as_json:
        print(json.dumps(items))
        return
    table = Table("dag_id", "run_id", "state", "start_date", "end_date")
    for i in items:
        table.add_row(i["dag_id"], i["run_id"], i["state"], i["start_date"] or "", i["end_date"] or "")
    Console().print(table)
