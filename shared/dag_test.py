"""``sluice dags test DAG_ID``: one run of a DAG in this process, no daemons (``airflow dags test``).

The run's state and XComs live in PostgreSQL as any run's (the configured
database; no Redis needed); what the daemons do is done here, in one loop:

* the DAG file is parsed here (Airflow's ``DagBag``, as the scheduler's parse)
  and stored, so the run and ``runs show`` see the DAG as it is on disk now;
* each pass is the scheduler's own (``scheduler.daemon.Scheduler.schedule``:
  ``decide``, expansion, trigger rules, retries, limits), its messages kept
  here instead of sent;
* each queued instance is claimed as a worker claims it and run **in this
  process's main thread** through the Task SDK as a worker slot runs it
  (``worker.sdk_slot.Slot``: ``TryComms``/``TrySupervisor``), so a task's prints
  reach the terminal, ``breakpoint()``/``pdb`` read the terminal, and
  ``execution_timeout`` (a ``SIGALRM``) works;
* the Execution API the SDK calls is Sluice's own app, served by uvicorn on
  127.0.0.1 (a free port) from a background thread that also holds the
  database pool (anyio's blocking portal): the task's calls are answered while
  the main thread is inside the task, or stopped at a breakpoint;
* a deferred instance's trigger runs here until it fires (the triggerer's own
  code), then the task resumes, as ``airflow dags test`` runs triggers inline;
* the DAG callbacks the run's end owes run at the end, as the scheduler runs
  them (in a child of a parse server), their output shown here.

Task log lines go to the try's log file (``sluice tasks logs`` reads them) and,
readable, to stdout. The exit code is 0 when the run succeeded, 1 when it
failed; a DAG that cannot be found or parsed is one line and exit 2.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread

from shared.config import Settings

WORKER_ID_PREFIX = "dags-test"
IDLE_POLL_S = 1.0  # nothing to run here and no timer: instances held elsewhere, look again


class DagTestError(Exception):
    """The test cannot start (no database, the DAG not found or refused): one line."""


def parse_logical_date(text: str | None) -> datetime | None:
    """``--logical-date`` (ISO 8601; a date alone is midnight; no zone is UTC)."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date or date-time: {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def test_dag(settings: Settings, dag_id: str, conf: dict, logical_date: datetime | None,
             mark_success: re.Pattern | None = None) -> int:
    """Run ``dag_id`` once here; 0 on success, 1 on failure (``DagTestError`` before a run).

    Tasks whose id ``mark_success`` matches whole are marked success instead of run (Airflow's
    ``--mark-success-pattern``: skip a sensor or a clean-up step when testing locally)."""
    from shared.airflow_spec.loading import use_airflow_home

    settings = settings.resolved()
    if not settings.database_url:
        raise DagTestError("no database configured: set SLUICE_DATABASE_URL, or start "
                           f"`sluice standalone` with SLUICE_HOME={settings.home}")
    use_airflow_home(settings.home)  # before Airflow is imported: it reads its home then
    with anyio.from_thread.start_blocking_portal() as portal:
        services = portal.call(Services.open, settings)
        try:
            test = DagTest(settings, portal, services, dag_id)
            test.mark_success = mark_success
            return test.run(conf, logical_date)
        finally:
            portal.call(services.close)


class Services:
    """What lives on the background event loop: the pool, the Execution API, and the
    scheduler's and triggerer's objects whose methods the test calls."""

    def __init__(self, settings: Settings, pool, api_settings, server, sock: socket.socket):
        self.settings, self.pool = settings, pool
        self.api_settings, self.server, self.sock = api_settings, server, sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        self.served: anyio.Event | None = None  # set once the server stopped serving
        self.scheduler = None
        self.triggerer = None

    @classmethod
    async def open(cls, settings: Settings) -> Services:
        from shared.db import create_pool
        from worker.execution_api import ApiSettings, bind, create_app
        from worker.execution_api.app import embedded_server

        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # its start and stop: noise here
        pool = await create_pool(settings.database_url, max_size=8)
        api_settings = ApiSettings(home=settings.home, worker_id=f"{WORKER_ID_PREFIX}:{os.getpid()}",
                                   api_host="127.0.0.1", api_port=0,
                                   max_map_length=settings.max_map_length,
                                   max_xcom_bytes=settings.max_xcom_bytes)
        sock = bind("127.0.0.1", 0)
        server = embedded_server(create_app(pool, api_settings, live=lambda ti_uuid: True))
        return cls(settings, pool, api_settings, server, sock)

    async def serve(self) -> None:
        self.served = anyio.Event()
        try:
            await self.server.serve(sockets=[self.sock])
        finally:
            self.served.set()

    async def start_parts(self) -> None:
        """The scheduler and triggerer objects (they make anyio events: on this loop)."""
        from shared.daemon import Lifecycle

        self.scheduler = local_scheduler(self.settings, self.pool, Lifecycle("dags-test"))
        await self.scheduler.refresh_dags()
        self.triggerer = LocalTriggerer.make(self.settings, self.pool)

    async def close(self) -> None:
        self.server.should_exit = True
        if self.served is not None:
            with anyio.move_on_after(5):
                await self.served.wait()
        self.sock.close()
        with anyio.move_on_after(5):
            await self.pool.close()


def local_scheduler(settings: Settings, pool, life):
    """The scheduler's passes; what a pass would send stays here (the test reads the
    database for what was queued, so instances queued by any scheduler are run)."""
    from scheduler.daemon import Scheduler

    class _Local(Scheduler):
        async def refresh_dags(self) -> None:
            await super().refresh_dags()
            self.paused = set()  # as `airflow dags test`, a paused DAG runs too

        async def send(self, items: list) -> None:
            pass

    return _Local(settings, pool, None, life)


class LocalTriggerer:
    """The triggerer's own handling of one trigger (load, first event, settle), its writes
    done at once instead of batched and its wake-ups dropped (this loop decides next)."""

    @staticmethod
    def make(settings: Settings, pool):
        import importlib

        from shared.daemon import Lifecycle
        from shared.dags_folder import add_dags_folder_to_path
        from triggerer.daemon import Triggerer

        class _Local(Triggerer):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.fired_rows: list[tuple[dict, str]] = []

            def _hand_to_writer(self, row: dict, next_kwargs_json: str) -> None:
                row["handed_at"] = anyio.current_time()
                self.fired_rows.append((row, next_kwargs_json))

            async def _wake(self, run_pks: set[int]) -> None:
                pass

            async def settle_all(self, rows: list[dict]) -> None:
                from shared.secrets import secrets_for

                self.airflow.TriggerComms(self.pool, secrets_for(self.settings.home)).install()
                async with anyio.create_task_group() as tg:
                    for row in rows:
                        tg.start_soon(self._run, row)
                fired, self.fired_rows = self.fired_rows, []
                if fired:
                    await self._write_batch(fired)

        add_dags_folder_to_path(settings.dags_folder)
        airflow = importlib.import_module("triggerer.airflow_triggers")
        return _Local(settings, pool, None, Lifecycle("dags-test"), airflow)


class DagTest:
    """The loop: a scheduling pass, then the tries it queued, then the triggers it parked."""

    def __init__(self, settings: Settings, portal, services: Services, dag_id: str):
        self.settings, self.portal, self.services = settings, portal, services
        self.dag_id = dag_id
        self.folder = Path(settings.dags_folder).resolve()
        self.dags: dict[str, Any] = {}  # the airflow.sdk DAGs of the DAG's file
        self.spec = None
        self.slot = None
        self.run_pk: int | None = None
        self.run_id: str | None = None
        self.mark_success: re.Pattern | None = None

    # --- setting up ----------------------------------------------------------------------
    def run(self, conf: dict, logical_date: datetime | None) -> int:
        self._load()
        self._start_logging()
        self.portal.start_task_soon(self.services.serve)
        self.portal.call(self.services.start_parts)
        self.run_pk, self.run_id = self.portal.call(self._create_run, conf, logical_date)
        print(f"dags test: run {self.run_id} of DAG {self.dag_id}", file=sys.stderr, flush=True)
        try:
            state = self._loop()
        except KeyboardInterrupt:  # Ctrl-C: the run is not left running for a scheduler to take
            self.portal.call(self._cancel)
            print(f"dags test: interrupted; run {self.run_id} cancelled (failed)",
                  file=sys.stderr, flush=True)
            return 130
        self._run_callbacks()
        return self._report(state)

    def _run_callbacks(self) -> None:
        """The DAG callbacks the run's end owes (``on_success_callback``...), run now as the
        scheduler runs them (a child of a parse server), their output shown here: none is
        left owed for a scheduler started later."""
        owed = self.portal.call(self._fetchval, "SELECT count(*) FROM callback_request"
                                " WHERE run_pk = $1", self.run_pk)
        if not owed:
            return
        from scheduler.callbacks import callback_log_path

        print(f"dags test: running {owed} callback(s) of the run", file=sys.stderr, flush=True)
        self.portal.call(self._drain_callbacks)
        path = callback_log_path(self.settings.logs_dir, self.dag_id, self.run_id)
        if path.is_file():
            sys.stdout.write(path.read_text(errors="replace"))
            sys.stdout.flush()

    async def _drain_callbacks(self) -> None:
        from scheduler.callbacks import CallbackRunner
        from scheduler.parsing import ParseServer

        server = ParseServer(self.folder, self.settings.home)
        try:
            await CallbackRunner(self.settings, self.services.pool, server,
                                 self.services.scheduler.callbacks).drain()
        finally:
            await server.stop()

    async def _cancel(self) -> None:
        from shared.clear import ClearError, cancel_run

        async with self.services.pool.acquire() as conn:
            with contextlib.suppress(ClearError):
                await cancel_run(conn, self.run_pk)

    def _load(self) -> None:
        """Parse the DAG's file here (where the database says it is, else the whole DAGs
        folder) and store its DAGs as the scheduler would."""
        from shared.airflow_spec.loading import load

        stored = self.portal.call(self._fetchval, "SELECT fileloc FROM dag WHERE dag_id = $1",
                                  self.dag_id)
        found = None
        if stored and Path(stored).is_file() and Path(stored).resolve().is_relative_to(self.folder):
            found = self._find(load(Path(stored), self.folder))
        if found is None:
            if not self.folder.is_dir():
                raise DagTestError(f"DAGs folder {self.folder} does not exist "
                                   "(set SLUICE_DAGS_FOLDER)")
            found = self._find(load(self.folder, self.folder))
        if found is None:
            raise DagTestError(f"DAG {self.dag_id!r} not found in {self.folder}")
        result, dag = found
        self.portal.call(self._store, result)
        from shared.serialization import DagSpec

        stored_spec = self.portal.call(self._fetchval, "SELECT serialized FROM dag WHERE dag_id = $1",
                                       self.dag_id)
        self.spec = DagSpec.model_validate(stored_spec)
        self.dags = {d.dag_id: d for d in result.dags}

    def _find(self, results: dict) -> tuple[Any, Any] | None:
        """The file that defines the DAG, or ``DagTestError`` when that file fails."""
        for result in results.values():
            for dag in result.dags:
                if dag.dag_id == self.dag_id:
                    return result, dag
        for result in results.values():
            if result.error and self.dag_id in Path(result.fileloc).read_text(errors="replace"):
                raise DagTestError(f"DAG {self.dag_id!r}: {result.fileloc} failed to import: "
                                   f"{result.error.strip().splitlines()[-1]}")
        return None

    async def _store(self, result) -> None:
        """The file's DAGs as Sluice's parse stores them (a DAG it cannot schedule: refused)."""
        from scheduler.parse_child import source_hash
        from scheduler.parsing import store_file
        from shared.airflow_spec.errors import SpecError
        from shared.airflow_spec.walk import dag_spec
        from shared.serialization import DagSpec

        specs, errors = [], [result.error] if result.error else []
        for dag in result.dags:
            try:
                spec = dag_spec(dag)
                DagSpec.model_validate(spec)
            except (SpecError, TypeError, ValueError) as exc:
                if dag.dag_id == self.dag_id:
                    raise DagTestError(f"DAG {self.dag_id!r} cannot be run by Sluice: {exc}") from None
                errors.append(f"{result.fileloc}: {exc}")
                continue
            specs.append(spec)
        await store_file(self.services.pool, {
            "fileloc": result.fileloc, "dags": specs, "error": "\n".join(errors) or None,
            "source_hash": source_hash(Path(result.fileloc))})

    async def _fetchval(self, sql: str, *args) -> Any:
        async with self.services.pool.acquire() as conn:
            return await conn.fetchval(sql, *args)

    async def _create_run(self, conf: dict, logical_date: datetime | None) -> tuple[int, str]:
        """A manual run, started with its instances (no ``max_active_runs`` wait: a test).
        A manual run at the same logical date is replaced, as ``airflow dags test`` does."""
        from scheduler.runs import create_manual_run, insert_task_instances, task_instance_rows
        from shared.db import q
        from shared.params import ParamsError

        async with self.services.pool.acquire() as conn, conn.transaction():
            if logical_date is not None:
                await conn.execute(q("dag_test_replace_run"), self.dag_id, logical_date)
            try:
                run_pk, run_id = await create_manual_run(conn, self.dag_id, conf, logical_date)
            except (ParamsError, ValueError) as exc:
                raise DagTestError(str(exc)) from None
            await conn.execute(q("start_run"), run_pk)
            await insert_task_instances(conn, run_pk, task_instance_rows(self.spec))
        return run_pk, run_id

    def _start_logging(self) -> None:
        """The SDK's logging to ``TerminalSink`` (each try's file, and stdout); one slot
        object runs every try in this thread."""
        from airflow.sdk.log import configure_logging

        from worker.sdk_slot import Slot

        sink = TerminalSink(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC))
        configure_logging(json_output=True, output=sink)
        self.slot = Slot(sink, (), self.folder)
        self.slot.dags = LoadedDags(self.dags)

    # --- the loop ------------------------------------------------------------------------
    def _loop(self) -> str:
        while True:
            self.portal.call(self.services.scheduler.schedule, [self.run_pk])
            state = self.portal.call(self._fetchval, "SELECT state FROM dag_run WHERE id = $1",
                                     self.run_pk)
            if state in ("success", "failed"):
                return state
            claimed = self.portal.call(self._claim)
            if claimed:
                for req in claimed:
                    self._run_try(req)
                continue
            rows = self.portal.call(self._deferred)
            if rows:
                self.portal.call(self.services.triggerer.settle_all, rows)
                continue
            self._idle()

    def _idle(self) -> None:
        """Wait for the pass's timer (a retry's delay), or look again in a moment."""
        due = self.services.scheduler.timers.get(self.run_pk)
        wait = IDLE_POLL_S
        if due is not None:
            wait = max(0.0, (due - datetime.now(UTC)).total_seconds())
            print(f"dags test: waiting {wait:.1f}s until {due.isoformat()} (a retry's delay)",
                  file=sys.stderr, flush=True)
        time.sleep(wait)

    async def _claim(self) -> list[dict]:
        """The run's queued instances, claimed as a worker claims them (one statement)."""
        from shared.db import q
        from shared.tasklogs import log_path
        from worker.execution_api import token_for

        async with self.services.pool.acquire() as conn:
            queued = await conn.fetch(q("dag_test_queued"), self.run_pk)
            if not queued:
                return []
            rows = await conn.fetch(q("claim_tis"), [r["id"] for r in queued],
                                    [r["try_number"] for r in queued],
                                    self.services.api_settings.worker_id, None, None)
        out = []
        for ti in sorted(rows, key=lambda r: (r["task_id"], r["map_index"])):
            out.append({
                "ti_id": ti["id"], "ti_uuid": str(ti["uuid"]), "run_pk": ti["run_pk"],
                "token": token_for(self.services.api_settings, ti["uuid"]),
                "api_url": self.services.url, "dag_id": ti["dag_id"], "run_id": ti["run_id"],
                "task_id": ti["task_id"], "map_index": ti["map_index"],
                "try_number": ti["try_number"], "fileloc": ti["fileloc"],
                "logical_date": ti["logical_date"],
                "log_path": str(log_path(self.settings.logs_dir, ti["dag_id"], ti["run_id"],
                                         ti["task_id"], ti["map_index"], ti["try_number"]))})
        return out

    def _run_try(self, req: dict) -> None:
        """One try in this thread, as a worker slot runs it; its end written as the worker
        writes an end the API never got."""
        name = req["task_id"] + ("" if req["map_index"] < 0 else f" [{req['map_index']}]")
        if self.mark_success is not None and self.mark_success.fullmatch(req["task_id"]):
            print(f"dags test: marking {name} success (--mark-success-pattern)", file=sys.stderr,
                  flush=True)
            self.portal.call(self._finish, req, "success", None, 0.0)
            return
        print(f"dags test: running {name} (try {req['try_number']})", file=sys.stderr, flush=True)
        result = self.slot.run(req, lambda message: None)
        state = result["state"]
        print(f"dags test: {name} ended {state or 'without a state'}"
              + (f": {result['error']}" if result["error"] else ""), file=sys.stderr, flush=True)
        if not result["reported"]:
            self.portal.call(self._fail_lost, req, result["error"] or
                             f"the try ended in state {state} without reporting it")
        elif result["error"] and state in ("failed", "up_for_retry"):
            self.portal.call(self._execute, "keep_try_error", req["ti_id"], req["try_number"],
                             result["error"])

    async def _execute(self, name: str, *args) -> None:
        from shared.db import q

        async with self.services.pool.acquire() as conn:
            await conn.execute(q(name), *args)

    async def _fail_lost(self, req: dict, error: str) -> None:
        from shared.textcap import cap_error

        delay = 0.0
        if req["task_id"] in self.spec.task_map:
            delay = self.spec.task(req["task_id"]).retry_policy().delay_after(
                req["dag_id"], req["task_id"], req["logical_date"], req["try_number"]) or 0.0
        await self._finish(req, "retry", cap_error(error), float(delay))

    async def _finish(self, req: dict, outcome: str, error: str | None, delay_s: float) -> None:
        """End a claimed try as the worker's ``finish_ti`` does (guarded: still ours)."""
        from shared.db import q

        async with self.services.pool.acquire() as conn:
            await conn.fetchrow(q("finish_ti"), req["ti_id"], req["try_number"], outcome, error,
                                None, delay_s, self.services.api_settings.worker_id, [], [],
                                None, None)

    async def _deferred(self) -> list[dict]:
        """The run's deferred instances' trigger rows, as the triggerer loads them."""
        from shared.db import q

        async with self.services.pool.acquire() as conn:
            ids = [r["trigger_id"] for r in await conn.fetch(q("dag_test_triggers"), self.run_pk)]
            return [dict(r) for r in await conn.fetch(q("load_triggers"), ids)] if ids else []

    # --- the end -------------------------------------------------------------------------
    def _report(self, state: str) -> int:
        from shared.runs_cli import _print_run
        from shared.runview import run_document_at

        async def document():
            async with self.services.pool.acquire() as conn:
                return await run_document_at(conn, self.run_pk)

        found = self.portal.call(document)
        sys.stdout.flush()
        with contextlib.suppress(Exception):
            _print_run(found)
        return 0 if state == "success" else 1


class LoadedDags:
    """``DagFiles`` for the DAGs loaded here: the task objects the slot runs."""

    def __init__(self, dags: dict[str, Any]):
        import structlog
        from airflow.sdk.execution_time.task_runner import _register_deserialization_allowed_classes

        self.dags = dags
        for dag in dags.values():
            _register_deserialization_allowed_classes(dag, structlog.get_logger())

    def task(self, fileloc: str, dag_id: str, task_id: str, log) -> Any:
        dag = self.dags.get(dag_id)
        if dag is None:
            raise LookupError(f"DAG {dag_id!r} not found in {fileloc}")
        task = dag.task_dict.get(task_id)
        if task is None:
            raise LookupError(f"task {task_id!r} not found in DAG {dag_id!r} ({fileloc})")
        return task


class TerminalSink:
    """The SDK's log lines (JSON, Airflow's task-log format) to the try's log file, and
    each one readable on stdout: ``[time] {logger} LEVEL - event key=value``."""

    def __init__(self, fallback_fd: int):
        from worker.sdk_tasklog import LogSink

        self.file = LogSink(fallback_fd)

    def write(self, data: bytes) -> int:
        self.file.write(data)
        for line in bytes(data).splitlines():
            text = _readable(line)
            if text:
                sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return len(data)

    def flush(self) -> None:
        sys.stdout.flush()

    def open(self, path: str) -> None:
        self.file.open(path)

    def close(self) -> None:
        self.file.close()


_STANDARD = frozenset({"timestamp", "level", "event", "logger", "logger_name", "filename",
                       "lineno", "func_name", "ti_id", "dag_id", "task_id", "run_id",
                       "try_number", "map_index", "chan", "exception", "loc"})


def _readable(line: bytes) -> str:
    try:
        entry = json.loads(line)
    except ValueError:
        return line.decode("utf-8", errors="replace")
    if not isinstance(entry, dict):
        return str(entry)
    extras = " ".join(f"{k}={v}" for k, v in entry.items() if k not in _STANDARD)
    logger = entry.get("logger") or entry.get("logger_name") or ""
    head = f"[{entry.get('timestamp', '')}] {{{logger}}} {str(entry.get('level', '')).upper()}"
    text = f"{head} - {entry.get('event', '')}" + (f" {extras}" if extras else "")
    return text + "".join(_traceback(e) for e in entry.get("exception") or ()
                          if isinstance(e, dict))


def _traceback(exc: dict) -> str:
    """A structured exception of a log line as Python prints one."""
    frames = "".join(f'\n  File "{f.get("filename")}", line {f.get("lineno")}, in {f.get("name")}'
                     for f in exc.get("frames") or ())
    return f"\nTraceback (most recent call last):{frames}\n{exc.get('exc_type')}: {exc.get('exc_value')}"
