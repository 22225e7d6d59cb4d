"""``sluice tasks logs``: a try's log from any host, readable or as raw JSON lines.

Reads go through ``reconnect.Database`` (a PostgreSQL restart while following
costs a pause); the lines come from the local file or the workers' log servers
(``shared.tasklogs``). Exit codes: 0 printed, 1 the log could not be read from
any place it was written, 2 no such instance or try (one line).
"""

from __future__ import annotations

import json
import sys

from shared.config import Settings
from shared.reconnect import CONNECT_BUDGET_S, Database, deadline_in
from shared.tasklogs import LogChunk, LogNotFound, follow_log, read_log, render


class _Reads:
    """The reads ``read_log`` makes, each retried through a restart of the database."""

    def __init__(self, db: Database):
        self.db = db

    async def fetchrow(self, sql: str, *args):
        return await self.db.run(lambda conn: conn.fetchrow(sql, *args),
                                 deadline=deadline_in(CONNECT_BUDGET_S))

    async def fetch(self, sql: str, *args):
        return await self.db.run(lambda conn: conn.fetch(sql, *args),
                                 deadline=deadline_in(CONNECT_BUDGET_S))


async def logs(settings: Settings, dag_id: str, run_id: str, task_id: str, map_index: int,
               try_number: int | None, follow: bool, as_json: bool) -> int:
    db_url, _ = settings.require_urls()
    db = Database(db_url)
    reads = _Reads(db)
    args = (reads, settings, dag_id, run_id, task_id, map_index, try_number)
    printed, unread, told = 0, [], set()
    try:
        if follow:
            async for chunk in follow_log(*args):
                printed += _print(chunk, as_json, told)
                unread = chunk.problems
        else:
            chunk = await read_log(*args)
            printed, unread = _print(chunk, as_json, told), chunk.problems
    except LogNotFound as exc:
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        await db.close()
    return 1 if unread and not printed else 0


def _print(chunk: LogChunk, as_json: bool, told: set[str]) -> int:
    """Print the chunk's records; each problem once, however often a follower meets it."""
    for problem in chunk.problems:
        if problem not in told:
            told.add(problem)
            print(f"warning: {problem}", file=sys.stderr)
    for record in chunk.records:
        print(json.dumps(record, ensure_ascii=False) if as_json else render(record))
    sys.stdout.flush()
    return len(chunk.records)
