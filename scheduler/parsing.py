"""DAG folder parsing: Airflow's DagBag in a parse server, each file in a forked child
with a timeout.

A file that fails to import (or hangs) becomes an ``import_error`` row and
breaks nothing else. Unchanged files (same mtime) are not parsed again. The
parse server (``scheduler.parse_child``) imports Airflow once and forks a
child per file; the scheduler itself never imports Airflow. A file may have
DAGs and an import error both (Airflow keeps a file's other DAGs when it
refuses one): both are stored, and the refused DAG keeps its last good version.

A dag_id belongs to the file that defined it first, as in Airflow's DagBag:
another file of the DAGs folder defining it too gets an
``AirflowDagDuplicatedIdException`` import error and its DAG is ignored. When
the owner is deleted, renamed or stops defining the dag_id, the refused file
is parsed again and takes over.

A slow file holds back only what it could change: each file's outcome is
stored (and announced through ``on_change``) as soon as it is known, and
waits for the files before it only when it claims a dag_id nobody owns.
A DAGs folder that is not there changes nothing in the database: one error
line, and the DAGs stay as they were until it is back.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import asyncpg
import structlog
from anyio.streams.buffered import BufferedByteReceiveStream

from shared import bus
from shared.config import default_home
from shared.daemon import task_environment
from shared.dags_folder import DagsFolderMissing, list_dag_files
from shared.db import DB_ERRORS, TRANSIENT_SQL, q
from shared.textcap import cap_error

log = structlog.get_logger()

#: First key of the transaction-scoped locks on the dag_ids a file stores (the two-key
#: form is a key space of its own): two files storing one new dag_id at once cannot both win.
DAG_ID_LOCK_KEY = 0x51_1CE_DA6
#: Time a parsing child gets beyond the import timeout (its own start, walking) before
#: the parse server kills it: Airflow's import timeout names the line, this is the backstop.
KILL_AFTER_TIMEOUT_S = 10.0
#: The longest answer the parse server may give (one file's DAGs as JSON).
MAX_ANSWER = 256 * 1024 * 1024
#: Stored outcomes are announced at most this often while a pass goes on.
ANNOUNCE_GAP_S = 0.5
#: What the parse server gets beyond a file's kill time to answer: past it, it is wedged.
ANSWER_GRACE_S = 5.0
#: How long the parse server may take to start (import Airflow) before it counts as wedged.
SERVER_START_TIMEOUT_S = 120.0
#: A lost database or Redis: the pass is retried later, never blamed on a file.
TRANSIENT = DB_ERRORS + bus.REDIS_ERRORS


def parse_environment(home: Path | None = None) -> dict[str, str]:
    """The environment of parsing processes: DAG files are user code, so they get no more
    than a task (no database or Redis URL, no password); Airflow's home is explicit."""
    from shared.airflow_spec.loading import airflow_home

    env = task_environment(os.environ)
    env.setdefault("AIRFLOW_HOME", str(airflow_home(home or default_home())))
    return env


def import_timeout_error(path: Path, timeout_s: float) -> str:
    """The import error of a file whose parse had to be killed (no line known): the text of
    Airflow's ``dagbag_import_timeout``."""
    return (f"{path}: airflow.sdk.exceptions.AirflowTaskTimeout: DagBag import timeout for "
            f"{path} after {float(timeout_s)}s.")


async def parse_file(path: Path, dags_folder: Path, timeout_s: float,
                     home: Path | None = None) -> dict:
    """One file parsed by a parse server started for it (one-off uses; the scheduler keeps
    one server for every pass); never raises for the file's own faults."""
    server = ParseServer(Path(dags_folder), home)
    try:
        return await server.parse(path, timeout_s)
    finally:
        await server.stop()


class ParseServer:
    """The parse server (``parse_child --serve``): Airflow imported once, a fork per file.
    Started on first use and again after it died or wedged.

    A file whose answer the server failed to give (it died, or did not start or
    answer in time) gets a result marked ``server_failed``: not the file's fault."""

    def __init__(self, dags_folder: Path, home: Path | None = None):
        self.dags_folder = dags_folder
        self.command = [sys.executable, "-m", "scheduler.parse_child", "--serve",
                        str(dags_folder)]
        self.env = parse_environment(home)
        self.proc: anyio.abc.Process | None = None
        self.reader: BufferedByteReceiveStream | None = None
        self.answers: dict[int, dict] = {}
        self.read_lock = anyio.Lock()
        self.start_lock = anyio.Lock()
        self.next_id = 0

    async def parse(self, path: Path, timeout_s: float) -> dict:
        """``{fileloc, source_hash, dags, error}`` of one file; never raises for the file's
        own faults."""
        self.next_id += 1
        job = self.next_id
        try:
            proc = await self._started()
            # the file's time starts once the server is up: its start is not the file's
            with anyio.fail_after(timeout_s + KILL_AFTER_TIMEOUT_S + ANSWER_GRACE_S):
                await proc.stdin.send(json.dumps(
                    {"id": job, "path": str(path), "timeout_s": timeout_s,
                     "kill_after_s": KILL_AFTER_TIMEOUT_S}).encode() + b"\n")
                answer = await self._answer(job, proc)
        except TimeoutError:  # the server itself is wedged: a new one serves the next file
            await self.stop()
            return _server_failed(path, "the parse server did not answer in time")
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError,
                anyio.ClosedResourceError, ValueError) as exc:
            await self.stop()
            return _server_failed(path, f"the parse server died: {type(exc).__name__}: {exc}")
        if answer.get("timed_out"):
            return _failed(path, import_timeout_error(path, timeout_s))
        if "failed" in answer:
            return _failed(path, answer["failed"])
        result = answer["result"]
        result["error"] = cap_error(result["error"])
        return result

    async def run_callback(self, request: dict, import_timeout_s: float,
                           timeout_s: float) -> dict:
        """Owed callbacks run in a forked child (``scheduler.callback_child``): ``{ran,
        errors}``, or ``{error}`` when the child died, was killed ``timeout_s`` after it
        started (loading the DAG file, at most ``import_timeout_s`` of it, and the callbacks
        together), or the server failed. Never raises for the callbacks' faults."""
        self.next_id += 1
        job = self.next_id
        import_timeout_s = min(import_timeout_s, timeout_s)
        try:
            proc = await self._started()
            with anyio.fail_after(timeout_s + ANSWER_GRACE_S):
                await proc.stdin.send(json.dumps(
                    {"id": job, "callback": request, "timeout_s": import_timeout_s,
                     "kill_after_s": timeout_s - import_timeout_s}).encode() + b"\n")
                answer = await self._answer(job, proc)
        except TimeoutError:
            await self.stop()
            return {"error": "the parse server did not answer in time"}
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError,
                anyio.ClosedResourceError, ValueError) as exc:
            await self.stop()
            return {"error": f"the parse server died: {type(exc).__name__}: {exc}"}
        if answer.get("timed_out"):
            return {"error": f"killed: still running {timeout_s:g}s after it started "
                             "(SLUICE_CALLBACK_TIMEOUT_S)"}
        if "failed" in answer:
            return {"error": cap_error(answer["failed"])}
        return answer["result"]

    async def _started(self) -> anyio.abc.Process:
        """The running server; a new one is started and awaited until it says it is ready
        (raises TimeoutError past ``SERVER_START_TIMEOUT_S``)."""
        async with self.start_lock:
            if self.proc is None or self.proc.returncode is not None:
                self.proc = await anyio.open_process(self.command, stderr=None, env=self.env)
                self.reader = BufferedByteReceiveStream(self.proc.stdout)
                self.answers = {}
                with anyio.fail_after(SERVER_START_TIMEOUT_S):
                    ready = json.loads(await self.reader.receive_until(b"\n", MAX_ANSWER))
                if not ready.get("started"):
                    raise ValueError(f"unexpected first line: {ready!r}")
            return self.proc

    async def _answer(self, job: int, proc: anyio.abc.Process) -> dict:
        """Read answers (whoever holds the lock reads for all) until this job's is in."""
        while job not in self.answers:
            async with self.read_lock:
                if job in self.answers or self.proc is not proc:
                    break
                answer = json.loads(await self.reader.receive_until(b"\n", MAX_ANSWER))
                self.answers[answer["id"]] = answer
        if job not in self.answers:
            raise anyio.EndOfStream
        return self.answers.pop(job)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with anyio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            await proc.aclose()


def _failed(path: Path, error: str) -> dict:
    return {"fileloc": str(path.resolve()), "dags": [], "source_hash": "",
            "error": cap_error(error)}


def _server_failed(path: Path, why: str) -> dict:
    """No answer for ``path`` because of the parse server: parsed again next pass."""
    return {**_failed(path, f"{path}: {why}"), "server_failed": True}


@dataclass(frozen=True)
class Stored:
    """What storing one file's outcome did."""

    changed: bool  # a DAG was added, changed or retired
    refused: tuple[str, ...] = ()  # dag_ids left to the other file that defines them


async def store_result(pool: asyncpg.Pool, result: dict,
                       present: Collection[str] | None = None, *,
                       paused_at_creation: bool = True) -> bool:
    """Write one file's outcome; True when a DAG was added or changed."""
    return (await store_file(pool, result, present,
                             paused_at_creation=paused_at_creation)).changed


def paused_upon_creation(dag: dict, paused_at_creation: bool) -> bool:
    """Whether a DAG seen for the first time starts paused, as Airflow decides it.

    The DAG's own ``is_paused_upon_creation`` when it sets one, else the
    installation's ``dags_are_paused_at_creation``. A DAG already stored keeps
    whatever it is (``upsert_dag`` sets ``is_paused`` on insert only).
    """
    own = dag.get("is_paused_upon_creation")
    return paused_at_creation if own is None else bool(own)


async def store_file(pool: asyncpg.Pool, result: dict,
                     present: Collection[str] | None = None, *,
                     paused_at_creation: bool = True) -> Stored:
    """Write one file's outcome (:func:`_store_file`); one PostgreSQL refuses to store
    (a value the walk let through) is that file's import error, never the scheduler's
    end: the file is parsed again when it changes."""
    try:
        return await _store_file(pool, result, present, paused_at_creation=paused_at_creation)
    except asyncpg.PostgresError as exc:
        if isinstance(exc, DB_ERRORS + TRANSIENT_SQL):
            raise
        error = cap_error(f"{result['fileloc']}: its DAGs could not be stored: "
                          f"{type(exc).__name__}: {exc}")
        log.warning("dag_import_error", fileloc=result["fileloc"], error=error)
        await pool.execute(q("set_import_error"), result["fileloc"], error)
        return Stored(changed=False)


async def _store_file(pool: asyncpg.Pool, result: dict,
                      present: Collection[str] | None = None, *,
                      paused_at_creation: bool = True) -> Stored:
    """Write one file's outcome: its DAGs, its import error, or both.

    ``present`` are the DAGs folder's files (resolved); without it a file is
    there when it exists. A dag_id whose active row belongs to another present
    file is not stored: the file gets Airflow's duplicate import error instead.
    A new DAG starts paused as :func:`paused_upon_creation` says.
    """
    fileloc = result["fileloc"]
    async with pool.acquire() as conn, conn.transaction():
        if result["error"] and not result["dags"]:
            log.warning("dag_import_error", fileloc=fileloc, error=result["error"])
            await conn.execute(q("set_import_error"), fileloc, result["error"])
            return Stored(changed=False)
        owners = await _owned_elsewhere(conn, result, present)
        kept = [dag for dag in result["dags"] if dag["dag_id"] not in owners]
        for dag in kept:
            paused = paused_upon_creation(dag, paused_at_creation)
            await conn.execute(q("upsert_dag"), dag["dag_id"], fileloc, result["source_hash"],
                               dag, paused)
        await warn_unknown_pools(conn, kept)
        retired = "UPDATE 0"
        if not result["error"]:  # a DAG refused with an error keeps its last good version
            retired = await conn.execute(q("deactivate_missing_dags"), fileloc,
                                         [d["dag_id"] for d in kept])
        # one line per cause; several refused dag_ids are joined by "; "
        errors = [result["error"]] if result["error"] else []
        if owners:
            errors.append("; ".join(duplicate_message(d, fileloc, f) for d, f in owners.items()))
        if errors:
            error = cap_error("\n".join(errors))
            log.warning("dag_import_error", fileloc=fileloc, error=error)
            await conn.execute(q("set_import_error"), fileloc, error)
        else:
            await conn.execute(q("clear_import_error"), fileloc)
    return Stored(changed=bool(kept) or retired != "UPDATE 0", refused=tuple(owners))


async def warn_unknown_pools(conn: asyncpg.Connection, dags: list[dict]) -> None:
    """Airflow's DAG warning for tasks naming a pool that does not exist: they wait for it.

    Logged when the file is stored (Airflow shows it in its UI); the scheduler says
    it again, per task, when such a task is held back (``limits.pool_problems``).
    """
    wanted = {d["dag_id"]: sorted({t["pool"] for t in d.get("tasks", ())}) for d in dags}
    names = sorted({p for pools in wanted.values() for p in pools})
    if not names:
        return
    known = {r["name"] for r in await conn.fetch(q("known_pools"), names)}
    for dag_id, pools in wanted.items():
        missing = [p for p in pools if p not in known]
        if missing:
            log.warning("dag_warning", dag_id=dag_id,
                        warning=f"Dag '{dag_id}' references non-existent pools: {missing!r}")


def duplicate_message(dag_id: str, incoming: str, existing: str) -> str:
    """Airflow's import error for a dag_id that ``existing`` already defines."""
    return (f"AirflowDagDuplicatedIdException: Ignoring DAG {dag_id} from {incoming} - "
            f"also found in {existing}")


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
    """Parses changed files of the DAGs folder; remembers mtimes between passes.

    ``on_change`` is awaited (at most every ``ANNOUNCE_GAP_S``, and once more
    at the end of a pass) after a stored file added, changed or retired a DAG.
    """

    def __init__(self, pool: asyncpg.Pool, dags_folder: Path, timeout_s: float,
                 on_change: Callable[[], Awaitable[object]] | None = None,
                 home: Path | None = None, paused_at_creation: bool = True):
        self.pool = pool
        self.paused_at_creation = paused_at_creation
        self.dags_folder = Path(dags_folder)
        self.timeout_s = timeout_s
        self.server = ParseServer(self.dags_folder, home)
        self.on_change = on_change
        self.mtimes: dict[str, float] = {}
        #: file -> (its fileloc, the dag_ids it was refused because another file has them)
        self.refused: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.folder_missing = False
        self._unannounced = False

    async def parse_changed(self) -> bool:
        """One pass over the folder; True when a DAG was added, changed or retired."""
        try:
            files = list_dag_files(self.dags_folder)
        except DagsFolderMissing as exc:
            if not self.folder_missing:  # one line per disappearance, not one per pass
                log.error("dags_folder_missing", dags_folder=str(self.dags_folder),
                          error=f"{exc}: its DAGs are kept as they are until it is back")
            self.folder_missing = True
            return False
        if self.folder_missing:
            log.info("dags_folder_back", dags_folder=str(self.dags_folder))
            self.folder_missing = False
        return await self._parse_files(files)

    async def _parse_files(self, files: list[Path]) -> bool:
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
        """Parse the files concurrently; store each as soon as it may be stored.

        Of two files defining a new dag_id in one pass, the first in the DAGs
        folder's order keeps it, as Airflow's DagBag: a file claiming a dag_id
        that no present file owns is stored after every file before it. Any
        other outcome (the file's own DAGs, an import error) is stored at once,
        so a file that hangs until its timeout holds back no other.
        """
        any_stored = False
        limiter = anyio.CapacityLimiter(4)
        turns = [anyio.Event() for _ in paths]
        done = anyio.Event()

        async def one(i: int, path: Path) -> None:
            nonlocal any_stored
            try:
                async with limiter:
                    mtime = _mtime(path)
                    result = await self._parse(path)
                if result.get("server_failed"):  # not the file's import error
                    log.warning("dag_file_not_parsed", file=str(path), error=result["error"],
                                retry="next pass")
                    return
                if await self._claims_unowned(result, present):
                    for turn in turns[:i]:
                        await turn.wait()
                stored = await store_file(self.pool, result, present,
                                          paused_at_creation=self.paused_at_creation)
            finally:
                turns[i].set()
            any_stored |= stored.changed
            self._unannounced |= stored.changed
            self.mtimes[str(path)] = mtime
            if stored.refused:
                self.refused[str(path)] = (result["fileloc"], stored.refused)
            else:
                self.refused.pop(str(path), None)

        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._announce_while, done)
                try:
                    async with anyio.create_task_group() as tg:
                        for i, path in enumerate(paths):
                            tg.start_soon(one, i, path)
                finally:
                    done.set()
        except BaseExceptionGroup as group:
            raise _lost_connection(group) or group from None
        return any_stored

    async def _parse(self, path: Path) -> dict:
        return await self.server.parse(path, self.timeout_s)

    async def aclose(self) -> None:
        """Stop the parse server (it also ends when the scheduler does)."""
        await self.server.stop()

    async def _claims_unowned(self, result: dict, present: set[str]) -> bool:
        """Whether the file defines a dag_id that no present file owns (a file earlier
        in the folder may define it too)."""
        dag_ids = [d["dag_id"] for d in result["dags"]]
        if not dag_ids:
            return False
        async with self.pool.acquire() as conn:
            owner = {r["dag_id"]: r["fileloc"]
                     for r in await conn.fetch(q("active_dag_owners"), dag_ids)}
        return any(owner.get(d) not in present for d in dag_ids)

    async def _announce_while(self, done: anyio.Event) -> None:
        """Announce stored outcomes while a pass goes on, and once when it ends."""
        while True:
            with anyio.move_on_after(ANNOUNCE_GAP_S):
                await done.wait()
            await self._announce()
            if done.is_set():
                return

    async def _announce(self) -> None:
        """Tell ``on_change``; a bus that is down leaves it to the end of the pass."""
        if not self._unannounced or self.on_change is None:
            return
        self._unannounced = False
        try:
            await self.on_change()
        except bus.REDIS_ERRORS as exc:
            self._unannounced = True
            log.warning("dags_changed_not_announced", error=str(exc))

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


def _lost_connection(group: BaseExceptionGroup) -> BaseException | None:
    """The first error of a group made only of lost connections (the database or Redis
    went away during the pass): raised bare, as the callers' ``except`` expects."""
    lost, rest = group.split(TRANSIENT)
    if lost is None or rest is not None:
        return None
    first: BaseException = lost
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0
