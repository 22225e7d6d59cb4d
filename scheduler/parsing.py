"""DAG folder parsing: each file in a child process with a timeout.

A file that fails to import (or hangs) becomes an ``import_error`` row and
breaks nothing else. Unchanged files (same mtime) are not parsed again.

A dag_id belongs to the file that defined it first, as in Airflow's DagBag:
another file of the DAGs folder defining it too gets an
``AirflowDagDuplicatedIdException`` import error and its DAG is ignored. When
the owner is deleted, renamed or stops defining the dag_id, the refused file
is parsed again and takes over.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import anyio
import asyncpg
import structlog

from shared.dagbag import list_dag_files
from shared.db import q
from shared.sdk.exceptions import AirflowDagDuplicatedIdException

log = structlog.get_logger()

#: First key of the transaction-scoped locks on the dag_ids a file stores (the two-key
#: form is a key space of its own): two files storing one new dag_id at once cannot both win.
DAG_ID_LOCK_KEY = 0x51_1CE_DA6


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


@dataclass(frozen=True)
class Stored:
    """What storing one file's outcome did."""

    changed: bool  # a DAG was added, changed or retired
    refused: tuple[str, ...] = ()  # dag_ids left to the other file that defines them


async def store_result(pool: asyncpg.Pool, result: dict,
                       present: Collection[str] | None = None) -> bool:
    """Write one file's outcome; True when a DAG was added or changed."""
    return (await store_file(pool, result, present)).changed


async def store_file(pool: asyncpg.Pool, result: dict,
                     present: Collection[str] | None = None) -> Stored:
    """Write one file's outcome: its DAGs, its import error, or both.

    ``present`` are the DAGs folder's files (resolved); without it a file is
    there when it exists. A dag_id whose active row belongs to another present
    file is not stored: the file gets Airflow's duplicate import error instead.
    """
    fileloc = result["fileloc"]
    async with pool.acquire() as conn, conn.transaction():
        if result["error"]:
            log.warning("dag_import_error", fileloc=fileloc, error=result["error"])
            await conn.execute(q("set_import_error"), fileloc, result["error"])
            return Stored(changed=False)
        owners = await _owned_elsewhere(conn, result, present)
        kept = [dag for dag in result["dags"] if dag["dag_id"] not in owners]
        for dag in kept:
            paused = bool(dag.get("is_paused_upon_creation"))
            await conn.execute(q("upsert_dag"), dag["dag_id"], fileloc, result["source_hash"],
                               dag, paused)
        retired = await conn.execute(q("deactivate_missing_dags"), fileloc,
                                     [d["dag_id"] for d in kept])
        if owners:  # one line; several refused dag_ids are joined by "; "
            error = "; ".join(duplicate_message(d, fileloc, f) for d, f in owners.items())
            log.warning("dag_import_error", fileloc=fileloc, error=error)
            await conn.execute(q("set_import_error"), fileloc, error)
        else:
            await conn.execute(q("clear_import_error"), fileloc)
    return Stored(changed=bool(kept) or retired != "UPDATE 0", refused=tuple(owners))


def duplicate_message(dag_id: str, incoming: str, existing: str) -> str:
    """Airflow's import error for a dag_id that ``existing`` already defines."""
    exc = AirflowDagDuplicatedIdException(dag_id, incoming, existing)
    return f"{type(exc).__name__}: {exc}"


async def _owned_elsewhere(conn: asyncpg.Connection, result: dict,
                           present: Collection[str] | None) -> dict[str, str]:
    """The file's dag_ids (in file order) that another present file owns -> that file."""
    dag_ids = [d["dag_id"] for d in result["dags"]]
    if not dag_ids:
        return {}
    await conn.execute(q("lock_dag_ids"), DAG_ID_LOCK_KEY, sorted(set(dag_ids)))
    rows = await conn.fetch(q("active_dag_owners"), dag_ids)
    owner = {r["dag_id"]: r["fileloc"] for r in rows if r["fileloc"] != result["fileloc"]}
    return {d: owner[d] for d in dag_ids
            if d in owner and _is_present(owner[d], present)}


def _is_present(fileloc: str, present: Collection[str] | None) -> bool:
    return fileloc in present if present is not None else os.path.isfile(fileloc)


class FolderParser:
    """Parses changed files of the DAGs folder; remembers mtimes between passes."""

    def __init__(self, pool: asyncpg.Pool, dags_folder: Path, timeout_s: float):
        self.pool = pool
        self.dags_folder = Path(dags_folder)
        self.timeout_s = timeout_s
        self.mtimes: dict[str, float] = {}
        #: file -> (its fileloc, the dag_ids it was refused because another file has them)
        self.refused: dict[str, tuple[str, tuple[str, ...]]] = {}

    async def parse_changed(self) -> bool:
        files = list_dag_files(self.dags_folder)
        present = {str(p.resolve()) for p in files}
        self.mtimes = {str(p): self.mtimes[str(p)] for p in files if str(p) in self.mtimes}
        async with self.pool.acquire() as conn:
            await conn.execute(q("deactivate_missing_files"), list(present))
            await conn.execute(q("clear_missing_import_errors"), list(present))
        await self._release(present)
        todo = [p for p in files if self.mtimes.get(str(p)) != _mtime(p)]
        any_stored, parsed = False, 0
        while todo:
            any_stored |= await self._parse_in_order(todo, present)
            parsed += len(todo)
            freed = await self._release(present)  # an owner parsed just now gave a dag_id up
            todo = [p for p in files if str(p) in freed]
        if parsed:
            log.info("dags_parsed", files=parsed, total=len(files))
        return any_stored

    async def _parse_in_order(self, paths: list[Path], present: set[str]) -> bool:
        """Parse the files concurrently, store them one by one in folder order.

        Of two files defining a new dag_id in one pass, the first in the DAGs
        folder's order keeps it, as Airflow's DagBag.
        """
        any_stored = False
        limiter = anyio.CapacityLimiter(4)
        turns = [anyio.Event() for _ in paths]

        async def one(i: int, path: Path) -> None:
            nonlocal any_stored
            try:
                async with limiter:
                    mtime = _mtime(path)
                    result = await parse_file(path, self.dags_folder, self.timeout_s)
                if i:
                    await turns[i - 1].wait()
                stored = await store_file(self.pool, result, present)
            finally:
                turns[i].set()
            any_stored |= stored.changed
            self.mtimes[str(path)] = mtime
            if stored.refused:
                self.refused[str(path)] = (result["fileloc"], stored.refused)
            else:
                self.refused.pop(str(path), None)

        async with anyio.create_task_group() as tg:
            for i, path in enumerate(paths):
                tg.start_soon(one, i, path)
        return any_stored

    async def _release(self, present: set[str]) -> set[str]:
        """Refused files one of whose dag_ids no other present file owns any more.

        Their mtimes are forgotten so that they are parsed again: the dag_id is
        theirs if nobody else took it first.
        """
        self.refused = {p: r for p, r in self.refused.items() if r[0] in present}
        if not self.refused:
            return set()
        wanted = sorted({d for _, ids in self.refused.values() for d in ids})
        async with self.pool.acquire() as conn:
            owner = {r["dag_id"]: r["fileloc"] for r in await conn.fetch(q("active_dag_owners"), wanted)}
        freed = {path for path, (fileloc, ids) in self.refused.items()
                 if any(owner.get(d) in (None, fileloc) or owner[d] not in present
                        for d in ids)}
        for path in freed:
            del self.refused[path]
            self.mtimes.pop(path, None)
        return freed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0
