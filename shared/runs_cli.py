"""The run commands of the CLI: trigger (and wait), clear, cancel, list, show.

A run is named by ``[DAG_ID] RUN_ID`` (``runview.find_run``). Every database
read goes through ``reconnect.Database``, so a PostgreSQL restart while a
command waits costs a pause, not the command, and its exit code stays true.
"""

from __future__ import annotations

import json
import sys
import time
from functools import partial

import anyio
from rich.console import Console
from rich.live import Live
from rich.table import Column, Table
from rich.text import Text

from shared import bus
from shared.config import Settings
from shared.messages import RunChanged
from shared.reconnect import (
    CONNECT_BUDGET_S,
    Database,
    ServiceUnavailable,
    deadline_in,
    ping,
    redis_call,
)
from shared.runview import RunLookupError, find_run, run_document_at, state_counts
from shared.tables import print_lines, print_table

FINISHED = ("success", "failed")


#: The longest pause between two attempts of a read (``backoff_delays``): a read that gives
#: up closer than this to its deadline gave up because of it.
RETRY_CAP_S = 5.0


def budget() -> float:
    return deadline_in(CONNECT_BUDGET_S)


async def _dag_is_active(conn, dag_id: str) -> bool:
    return await conn.fetchval("SELECT 1 FROM dag WHERE dag_id = $1 AND is_active", dag_id) is not None


async def trigger(settings: Settings, dag_id: str, conf: dict, wait: bool, as_json: bool,
                  timeout: float) -> int:
    """Create a manual run (Redis is reached first: an unreachable one is said before
    a run exists); with ``wait``, its outcome as the exit code."""
    from scheduler.runs import create_manual_run

    db_url, redis_url = settings.require_urls()
    db = Database(db_url)
    try:
        if not await db.run(_dag_is_active, dag_id, deadline=budget()):
            print(f"DAG {dag_id!r} not found (is the scheduler running on this DAGs folder? "
                  "see `sluice dags list`)", file=sys.stderr)
            return 2
        await redis_call(redis_url, ping, deadline=budget())
        run_pk, run_id = await db.run_once(create_manual_run, dag_id, conf, deadline=budget())
        await wake_scheduler(settings, run_pk)
        return await _report(db, run_pk, f"created run {run_id} of DAG {dag_id}", wait, as_json,
                             timeout)
    finally:
        await db.close()


async def clear(settings: Settings, dag_id: str | None, run_id: str, only_failed: bool,
                wait: bool, as_json: bool, timeout: float) -> int:
    """Clear a finished run so that it runs again (see ``shared.clear``)."""
    from shared.clear import ClearError, clear_run

    db_url, redis_url = settings.require_urls()
    db = Database(db_url)
    try:
        try:
            run_pk = await db.run(find_run, run_id, dag_id, deadline=budget())
            await redis_call(redis_url, ping, deadline=budget())
            done = await db.run_once(partial(clear_run, only_failed=only_failed), run_pk,
                                  deadline=budget())
        except (RunLookupError, ClearError) as exc:
            print(str(exc), file=sys.stderr)
            return 2
        await wake_scheduler(settings, run_pk)
        summary = (f"cleared {done['cleared']} task instances of run {run_id} of DAG "
                   f"{done['dag_id']} ({done['removed']} removed, {done['added']} added)")
        return await _report(db, run_pk, summary, wait, as_json, timeout)
    finally:
        await db.close()


async def cancel(settings: Settings, dag_id: str | None, run_id: str, as_json: bool) -> int:
    """Airflow's "mark run failed" (``shared.clear.cancel_run``): running tries are stopped by
    their workers, deferred ones leave the triggerer, the rest are skipped."""
    from shared.clear import ClearError, cancel_run

    db_url, redis_url = settings.require_urls()
    db = Database(db_url)
    try:
        try:
            run_pk = await db.run(find_run, run_id, dag_id, deadline=budget())
            await redis_call(redis_url, ping, deadline=budget())
            done = await db.run_once(cancel_run, run_pk, deadline=budget())
        except (RunLookupError, ClearError) as exc:
            print(str(exc), file=sys.stderr)
            return 2
    finally:
        await db.close()
    await wake_scheduler(settings, run_pk)
    if as_json:
        print(json.dumps({k: v for k, v in done.items() if k != "run_pk"}))
        return 0
    failed = sum(1 for c in done["changed"] if c["new_state"] == "failed")
    print_lines(f"cancelled run {done['run_id']} of DAG {done['dag_id']}: {failed} failed, "
                f"{len(done['changed']) - failed} skipped; the run is {done['run_state']}"
                + ("" if done["run_state"] == "failed" else " until its teardowns end"))
    if done["changed"]:
        print_table(("task", "map_index", "was", "now"),
                    [[c["task_id"], str(c["map_index"]), c["state"] or "none", c["new_state"]]
                     for c in done["changed"]], whole=("task",))
    return 0


async def wake_scheduler(settings: Settings, run_pk: int) -> None:
    """Tell the scheduler about the run; if Redis is gone, its repair sweep finds the run."""
    _, redis_url = settings.require_urls()
    item = (bus.Streams(settings.stream_prefix).events, RunChanged(run_pk=run_pk))
    try:
        await redis_call(redis_url, bus.publish, [item], deadline=budget())
    except ServiceUnavailable as exc:
        print(f"{exc} (the scheduler's repair sweep starts the run)", file=sys.stderr)


async def _report(db: Database, run_pk: int, summary: str, wait: bool, as_json: bool,
                  timeout: float) -> int:
    """Print the run (or ``summary``); with ``wait``, its outcome as the exit code."""
    if not wait:
        if as_json:
            print(json.dumps((await db.run(run_document_at, run_pk, deadline=budget()))["doc"]))
        else:
            print(summary)
        return 0
    deadline = deadline_in(timeout)
    state = await _wait(db, run_pk, deadline, live=not as_json and sys.stdout.isatty())
    try:  # the wait's time left (a PostgreSQL restart is waited out), at least a connect's
        found = await db.run(run_document_at, run_pk, deadline=max(deadline, budget()))
    except ServiceUnavailable as exc:
        if state not in FINISHED:  # the wait's own deadline passed: that is what exit 3 says
            print(f"gave up waiting after {timeout:g}s (run is {state}; {exc})", file=sys.stderr)
            return 3
        print(f"run finished ({state}), but it cannot be shown: {exc}", file=sys.stderr)
        found = None
    if found is not None and as_json:
        print(json.dumps(found["doc"]))
    elif found is not None:
        _print_run(found)
    if state not in FINISHED:
        print(f"gave up waiting after {timeout:g}s (run is {state})", file=sys.stderr)
        return 3
    return 0 if state == "success" else 1


async def _wait(db: Database, run_pk: int, deadline: float, live: bool) -> str:
    """Wait for the run to finish (or ``deadline``), showing counts by state on a terminal.

    A read that loses the database is retried until the wait's own deadline:
    a restart of PostgreSQL is a pause here, not an error, and a database still
    down at the deadline is the wait giving up (the state last seen is returned).
    """
    state = "queued"
    delay = 0.02
    with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
        with Live(console=Console(stderr=True), transient=True, auto_refresh=False) as view:
            while True:
                try:
                    found = await db.run(run_document_at, run_pk, deadline=deadline)
                except ServiceUnavailable:
                    if time.monotonic() + RETRY_CAP_S < deadline:
                        raise  # refused, not the deadline: no wait cures it
                    return state
                state = found["doc"]["state"]
                if live:
                    view.update(_progress(found), refresh=True)
                if state in FINISHED:
                    break
                await anyio.sleep(delay)
                delay = min(delay * 1.5, 0.5)
    return state


def _progress(found: dict) -> Table:
    """The live view of ``--wait``: each task's state, mapped ones summarised."""
    doc = found["doc"]
    table = Table(Column("task", overflow="fold"), Column("states", overflow="fold"),
                  title=Text(f"{doc['dag_id']} {doc['run_id']}: {doc['state']}"))
    for row in _rows(found, every_instance=False):
        table.add_row(Text(row[0]), Text(row[1]))
    return table


def _deferral_detail(extra: dict) -> str:
    """``DateTimeTrigger fires 10:00:02 times out 11:00:00``: what a deferred instance waits on."""
    parts = [(extra["trigger"] or "trigger pending").rpartition(".")[2]]
    if extra.get("trigger_moment"):
        parts.append(f"fires {extra['trigger_moment']}")
    if extra.get("trigger_timeout"):
        parts.append(f"times out {extra['trigger_timeout']}")
    return " ".join(parts)


ROW_HEADERS = ("task", "state", "try", "label", "return_value", "detail")


def _print_run(found: dict, every_instance: bool = False) -> None:
    """The run for people: its tasks in graph order, a mapped task as one summary row
    unless ``every_instance``, every value whole (``shared.tables``).

    The label column shows a mapped instance's index when it has no rendered
    ``map_index_template`` (SEMANTICS §1: without a template the label is the
    index); the JSON keeps ``label`` null then (DESIGN.md: other tools read it).
    """
    doc = found["doc"]
    counts = state_counts(doc["tasks"])
    head = [f"{doc['dag_id']}  {doc['run_id']}  {doc['state']}"
            + (f" ({found['note']})" if found.get("note") else ""),
            f"started {doc['start_date']}  ended {doc['end_date']}",
            "counts: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))]
    print_lines("\n".join(head))
    print_table(ROW_HEADERS, _rows(found, every_instance), whole=("task",))


def _rows(found: dict, every_instance: bool) -> list[list[str]]:
    """One row per task, in graph order; a mapped task with several instances is one
    summary row (``load [0..999]``) unless ``every_instance``."""
    by_task: dict[str, list[tuple[dict, dict]]] = {}
    for t, extra in zip(found["doc"]["tasks"], found["extra"], strict=True):
        by_task.setdefault(t["task_id"], []).append((t, extra))
    rows = []
    for task_id in found["order"]:
        tis = by_task[task_id]
        if every_instance or len(tis) == 1:
            rows += [_instance_row(t, extra) for t, extra in tis]
        else:
            rows.append(_summary_row(task_id, tis))
    return rows


def _instance_row(t: dict, extra: dict) -> list[str]:
    name = t["task_id"] if t["map_index"] < 0 else f"{t['task_id']} [{t['map_index']}]"
    label = t["label"] if t["label"] is not None else str(t["map_index"]) if t["map_index"] >= 0 else ""
    value = "" if t["return_value"] is None else json.dumps(t["return_value"])
    if t["state"] == "deferred":
        detail = _deferral_detail(extra)
    else:
        detail = extra["error"] or ""
    return [name, t["state"] or "none", str(t["try_number"]), label, value, detail]


def _summary_row(task_id: str, tis: list[tuple[dict, dict]]) -> list[str]:
    """``load [0..999]  success 997, failed 2, running 1``, and the first error in full."""
    indexes = [t["map_index"] for t, _ in tis]
    counts = state_counts([t for t, _ in tis]).most_common()
    failing = [(t["map_index"], extra["error"]) for t, extra in tis
               if extra["error"] and t["state"] not in ("success", "skipped")]
    detail = ""
    if failing:
        detail = f"[{failing[0][0]}] {failing[0][1]}"
        if len(failing) > 1:
            detail += f"\n{len(failing) - 1} more with errors (--all lists every instance)"
    return [f"{task_id} [{min(indexes)}..{max(indexes)}]",
            ", ".join(f"{state} {n}" for state, n in counts), "", "", "", detail]


async def _find_document(conn, run_id: str, dag_id: str | None) -> dict:
    return await run_document_at(conn, await find_run(conn, run_id, dag_id))


async def show(settings: Settings, dag_id: str | None, run_id: str, as_json: bool,
               every_instance: bool = False) -> int:
    db_url, _ = settings.require_urls()
    db = Database(db_url)
    try:
        found = await db.run(_find_document, run_id, dag_id, deadline=budget())
    except RunLookupError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        await db.close()
    if as_json:
        print(json.dumps(found["doc"]))
    else:
        _print_run(found, every_instance)
    return 0


async def _recent_runs(conn, dag_id: str | None, limit: int) -> list:
    return await conn.fetch(
        "SELECT dag_id, run_id, state, run_type, logical_date, start_date, end_date FROM dag_run"
        " WHERE ($1::text IS NULL OR dag_id = $1) ORDER BY id DESC LIMIT $2", dag_id, limit)


async def list_runs(settings: Settings, dag_id: str | None, limit: int, as_json: bool) -> None:
    db_url, _ = settings.require_urls()
    db = Database(db_url)
    try:
        rows = await db.run(_recent_runs, dag_id, limit, deadline=budget())
    finally:
        await db.close()
    from shared.runview import iso

    items = [{"dag_id": r["dag_id"], "run_id": r["run_id"], "state": r["state"],
              "run_type": r["run_type"], "logical_date": iso(r["logical_date"]),
              "start_date": iso(r["start_date"]), "end_date": iso(r["end_date"])} for r in rows]
    if as_json:
        print(json.dumps(items))
        return
    print_table(("dag_id", "run_id", "state", "start_date", "end_date"),
                [[i["dag_id"], i["run_id"], i["state"], i["start_date"] or "-", i["end_date"] or "-"]
                 for i in items], whole=("run_id",))
