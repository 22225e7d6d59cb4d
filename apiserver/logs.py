"""A task instance's log, read for the REST API.

Each try's log is the file the worker wrote it to:
``$SLUICE_HOME/logs/dag_id=D/run_id=R/task_id=T[/map_index=N]/attempt=K.log``
(``worker.daemon``), on the host of the worker that ran it: the api-server
reads it where it shares that folder (one machine, or a shared volume). A JSON
line (the Task SDK's structured log) is one message as written; any other line
(a legacy task's stdout) is one message whose ``event`` is the text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def log_path(logs_dir: Path, dag_id: str, run_id: str, task_id: str, map_index: int,
             try_number: int) -> Path:
    """Where the worker writes try ``try_number`` of an instance (``worker.daemon``)."""
    path = logs_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        path /= f"map_index={map_index}"
    return path / f"attempt={try_number}.log"


def messages(path: Path) -> Iterator[dict]:
    """The log's messages in order; nothing when the file is not there (yet)."""
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            line = line.rstrip("\n")
            if line:
                yield _message(line)


def _message(line: str) -> dict:
    if line.startswith("{"):
        try:
            found = json.loads(line)
        except ValueError:
            found = None
        if isinstance(found, dict) and isinstance(found.get("event"), str):
            return found
    return {"event": line}
