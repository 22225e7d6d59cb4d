"""An instance's log for the UI: one try read through ``shared.tasklogs``, and followed.

``shared.tasklogs.read_log`` finds the try's file on this host or on the log
server of the worker that ran it, and resumes from a continuation token. The
UI follows a live try by reading on after each change of its run that the
event stream reports, and every ``tail_s`` in between (a running task writes
lines no event announces); it ends once the try is over and all was read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from apiserver.ui.events import Batch, EventHub
from shared import tasklogs
from shared.config import Settings


def line_json(record: dict[str, Any]) -> dict[str, Any]:
    """A log record as the page shows it: time, level, and the rest as text."""
    rest = {k: v for k, v in record.items() if k not in ("timestamp", "level")}
    return {"timestamp": record.get("timestamp"), "level": (record.get("level") or "").upper(),
            "text": tasklogs.render(rest)}


def chunk_json(chunk: tasklogs.LogChunk) -> dict[str, Any]:
    return {"try_number": chunk.try_number, "lines": [line_json(r) for r in chunk.records],
            "continuation": chunk.continuation, "live": chunk.live, "complete": not chunk.more,
            "problems": chunk.problems}


async def follow(pool: Any, settings: Settings, hub: EventHub, run_pk: int, where: dict,
                 try_number: int, continuation: str | None, *,
                 tail_s: float = 0.5) -> AsyncIterator[str]:
    """SSE text: a ``log`` event per non-empty read, then ``end`` once the try is over.

    ``where`` holds ``dag_id``, ``run_id``, ``task_id`` and ``map_index``.
    """
    async with hub.subscribe() as queue:
        while True:
            try:
                chunk = await tasklogs.read_log(pool, settings, try_number=try_number,
                                                continuation=continuation, **where)
            except (tasklogs.LogNotFound, ValueError) as exc:
                yield _event("end", {"error": str(exc)})
                return
            continuation = chunk.continuation
            if chunk.records or chunk.problems:
                yield _event("log", chunk_json(chunk))
            if not chunk.live and not chunk.more:
                yield _event("end", {"continuation": continuation})
                return
            if not chunk.more:
                await _changed(queue, run_pk, tail_s)


async def _changed(queue: asyncio.Queue, run_pk: int, wait_s: float) -> bool:
    """Wait until the run changed (or the feed resynced), at most ``wait_s``."""
    try:
        async with asyncio.timeout(wait_s):
            while True:
                item = await queue.get()
                if not isinstance(item, Batch) or any(r["run_pk"] == run_pk for r in item.runs):
                    return True
    except TimeoutError:
        return False


def _event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"
