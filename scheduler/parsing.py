"""DAG folder parsing: each file in a child process with a timeout.

A file that fails to import (or hangs) becomes an ``import_error`` row and
breaks nothing else. Unchanged files (same mtime) are not parsed again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import asyncpg
import structlog

from shared.dagbag import list_dag_files
from shared.db import q

log = structlog.get_logger()


async def parse_file(path: Path, dags_folder: Path, timeout_s: float) -> dict:
    """Run the parsing child for one file; never raises for the file's own faults."""
    cmd = [sys.executable, "-m", "scheduler.parse_child", str(path), str(dags_folder)]
    try:
        with anyio.fail_after(timeout_s):
            proc = await anyio.run_process(cmd, check=False)
    except TimeoutError:
        return {"fileloc": str(path.resolve()), "dags": [], "source_hash": "",
                "error": f"{path}: DAG file import timed out after {timeout_s:g}s"}
    try:
        return json.loads(proc.stdout)
    except ValueError:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-5:]
        return {"fileloc": str(path.resolve()), "dags": [], "source_hash": "",
                "error": f"{path}: parser exited with code {proc.returncode}: " + "\n".join(tail)}


async def store_result(pool: asyncpg.Pool, result: dict) -> bool:
    """Write one file's outcome; True when a DAG was added or changed."""
    fileloc = result["fileloc"]
    async with pool.acquire() as conn, conn.transaction():
        if result["error"]:
            log.warning("dag_import_error", fileloc=fileloc, error=result["error"])
            await conn.execute(q("set_import_error"), fileloc, result["error"])
            return False
        await conn.execute(q("clear_import_error"), fileloc)
        for dag in result["dags"]:
            paused = bool(dag.get("is_paused_upon_creation"))
            await conn.execute(q("upsert_dag"), dag["dag_id"], fileloc, result["source_hash"],
                               dag, paused)
        await conn.execute(q("deactivate_missing_dags"), fileloc,
                           [d["dag_id"] for d in result["dags"]])
    return True


class FolderParser:
    """Parses changed files of the DAGs folder; remembers mtimes between passes."""

    def __init__(self, pool: asyncpg.Pool, dags_folder: Path, timeout_s: float):
        self.pool = pool
        self.dags_folder = Path(dags_folder)
        self.timeout_s = timeout_s
        self.mtimes: dict[str, float] = {}

    async def parse_changed(self) -> bool:
        files = list_dag_files(self.dags_folder)
        changed = [p for p in files if self.mtimes.get(str(p)) != _mtime(p)]
        any_stored = False
        limiter = anyio.CapacityLimiter(4)

        async def one(path: Path) -> None:
            nonlocal any_stored
            async with limiter:
                mtime = _mtime(path)
                result = await parse_file(path, self.dags_folder, self.timeout_s)
                any_stored |= await store_result(self.pool, result)
                self.mtimes[str(path)] = mtime

        async with anyio.create_task_group() as tg:
            for path in changed:
                tg.start_soon(one, path)
        present = [str(p.resolve()) for p in files]
        async with self.pool.acquire() as conn:
            await conn.execute(q("deactivate_missing_files"), present)
            await conn.execute(q("clear_missing_import_errors"), present)
        if changed:
            log.info("dags_parsed", files=len(changed), total=len(files))
        return any_stored


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0
