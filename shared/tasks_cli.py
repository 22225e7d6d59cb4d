"""The task-instance commands of the CLI: clear, mark-success, mark-failed (``shared.clear``).

Each names one task of one run, ``DAG_ID RUN_ID TASK_ID`` (``--map-index`` for one
mapped instance), changes it in one transaction, then wakes the scheduler as
``runs clear`` does. What cannot be done (an unknown DAG, run, task or map index, a
task already in the state asked for) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from functools import partial

from shared.clear import ClearError, clear_tasks, mark_tasks
from shared.config import Settings
from shared.reconnect import Database, ping, redis_call
from shared.runs_cli import budget, wake_scheduler
from shared.runview import RunLookupError, find_run
from shared.tables import print_lines, print_table


async def _change(settings: Settings, dag_id: str, run_id: str, operation) -> dict | None:
    """Find the run, apply ``operation(conn, run_pk)`` once, wake the scheduler; ``None``
    (and the reason on stderr) when it cannot be done. Redis is reached first: an
    unreachable one is said before anything changes."""
    db_url, redis_url = settings.require_urls()
    db = Database(db_url)
    try:
        run_pk = await db.run(find_run, run_id, dag_id, deadline=budget())
        await redis_call(redis_url, ping, deadline=budget())
        done = await db.run_once(operation, run_pk, deadline=budget())
    except (RunLookupError, ClearError) as exc:
        print(str(exc), file=sys.stderr)
        return None
    finally:
        await db.close()
    await wake_scheduler(settings, run_pk)
    return done


async def clear(settings: Settings, dag_id: str, run_id: str, task_id: str, map_index: int | None,
                downstream: bool, upstream: bool, only_failed: bool, as_json: bool) -> int:
    """``tasks clear``: the instances go back to be scheduled, their tries kept."""
    done = await _change(settings, dag_id, run_id, partial(
        clear_tasks, task_id=task_id, map_index=map_index, downstream=downstream,
        upstream=upstream, only_failed=only_failed))
    if done is None:
        return 2
    summary = (f"cleared {len(done['cleared'])} task instances of run {run_id} of DAG {dag_id}"
               if done["cleared"] else
               f"no task instance to clear in run {run_id} of DAG {dag_id}: the run is left as it is")
    _show(done, as_json, summary, "cleared")
    return 0


async def mark(settings: Settings, dag_id: str, run_id: str, task_id: str, state: str,
               map_index: int | None, downstream: bool, upstream: bool, as_json: bool) -> int:
    """``tasks mark-success`` / ``mark-failed``: Airflow's "Mark as"."""
    done = await _change(settings, dag_id, run_id, partial(
        mark_tasks, task_id=task_id, state=state, map_index=map_index, downstream=downstream,
        upstream=upstream))
    if done is None:
        return 2
    summary = f"marked {len(done['marked'])} task instances {state} in run {run_id} of DAG {dag_id}"
    if done["cleared"]:
        summary += f"; cleared {len(done['cleared'])} failed downstream"
    _show(done, as_json, summary, "marked", "cleared")
    return 0


def _show(done: dict, as_json: bool, summary: str, *lists: str) -> None:
    """The change as JSON, or a line and a table of the instances it touched."""
    if as_json:
        print(json.dumps({k: v for k, v in done.items() if k != "run_pk"}))
        return
    print_lines(summary)
    rows = [[item["task_id"], str(item["map_index"]), item["state"] or "none",
             item.get("new_state") or ("none" if kind == "cleared" else ""), kind]
            for kind in lists for item in done[kind]]
    if rows:
        print_table(("task", "map_index", "was", "now", "change"), rows, whole=("task",))
