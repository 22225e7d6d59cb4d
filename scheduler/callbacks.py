"""DAG and task callbacks owed to users: recorded durably, run outside the daemon.

Airflow 3 runs them in its DAG processor; Sluice runs them in a child the
scheduler's parse server forks (``scheduler.callback_child``), so a callback
that raises, hangs or crashes costs that child only.

*What is owed* (one ``callback_request`` row, written in the transaction that
ends the run or the try, so a restart loses none):

- a DAG's ``on_success_callback`` / ``on_failure_callback`` when a run ends,
  with Airflow's reason: ``success``, ``task_failure``,
  ``all_tasks_deadlocked``, ``timed_out`` (``dagrun_timeout``);
- a task's ``on_failure_callback`` / ``on_retry_callback`` and its
  ``email_on_failure`` / ``email_on_retry`` when a try failed *outside* its
  task process: a heartbeat timeout (the scheduler's zombie sweep), a slot
  that died, wedged past ``execution_timeout`` or could not report (the
  worker). A try that fails inside its process runs these in its slot (the
  Task SDK's own ``finalize``), never here; ``upstream_failed`` and
  ``skipped`` instances get none, as in Airflow.

*How it runs*: a loop claims rows (``FOR UPDATE SKIP LOCKED``, leased), sends
each to the parse server and deletes it once it ran, whatever the callbacks
did: like Airflow, a callback that raised is logged, not retried. A row whose
scheduler died while running it is claimed again when its lease ends (at most
``MAX_ATTEMPTS`` claims). The loop wakes when this scheduler asked for one,
and every ``repair_interval_s`` for those the workers asked for.

*Where the output goes*: ``$SLUICE_HOME/logs/callbacks/dag_id=<dag>/run_id=<run>.log``
(``SLUICE_LOGS_FOLDER`` moves it with the task logs): every callback of a run,
its prints, logs and tracebacks; the scheduler's own log has one line per
callback (``callback_ran`` / ``callback_failed``) naming that file.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import anyio
import asyncpg
import structlog

from shared import bus
from shared.config import Settings
from shared.db import DB_ERRORS, TRANSIENT_SQL, q
from shared.paths import private_dirs
from shared.secrets import SecretsError, secrets_for
from shared.serialization import DagSpec
from shared.textcap import cap_error

log = structlog.get_logger()

#: Claims of one request before it is dropped (each claim's scheduler died running it).
MAX_ATTEMPTS = 3
#: Requests claimed at once, and run at once (each is a forked child): no more are
#: claimed than can run, so no claim's lease runs down while it waits its turn.
CONCURRENCY = 4
#: A claim's lease beyond the time its child may take.
LEASE_MARGIN_S = 30.0
TRANSIENT = DB_ERRORS + TRANSIENT_SQL + bus.REDIS_ERRORS


class CallbackRequests:
    """What the scheduling pass and the zombie sweep call to record owed callbacks.

    ``flush()`` after the transaction committed wakes the runner: a wake-up sent
    before the commit could find nothing yet.
    """

    def __init__(self) -> None:
        self.wake = anyio.Event()
        self._requested = False

    async def run_ended(self, conn: asyncpg.Connection, spec: DagSpec, run_pk: int,
                        state: str, reason: str) -> None:
        """A run of ``spec`` ended in ``state``: its DAG callback, if it has that one."""
        callback = "on_success_callback" if state == "success" else "on_failure_callback"
        if callback in spec.callbacks:
            await conn.execute(q("request_dag_callback"), run_pk, callback, reason)
            self._requested = True

    async def try_failed(self, conn: asyncpg.Connection, ti_id: int, try_number: int,
                         reason: str) -> None:
        """A try failed outside its task process: its task's failure or retry callback and
        email (the child finds out which the task has)."""
        await conn.execute(q("request_task_callback"), ti_id, try_number, cap_error(reason))
        self._requested = True

    def flush(self) -> None:
        if self._requested:
            self._requested = False
            self.wake.set()


def run_end_reason(state: str, deadlocked: bool) -> str:
    """Airflow's ``reason`` for a run the scheduling pass ended."""
    if deadlocked:
        return "all_tasks_deadlocked"
    return "success" if state == "success" else "task_failure"


def callback_log_path(logs_dir: Path, dag_id: str, run_id: str) -> Path:
    """The file a run's callbacks write to (every callback of the run, appended)."""
    return logs_dir / "callbacks" / f"dag_id={dag_id}" / f"run_id={run_id}.log"


class CallbackRunner:
    """Claims owed callbacks and runs them in the parse server's children."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, server, requests: CallbackRequests):
        self.settings = settings
        self.pool = pool
        self.server = server  # scheduler.parsing.ParseServer
        self.requests = requests
        self.limiter = anyio.CapacityLimiter(CONCURRENCY)
        self.lease_s = settings.callback_timeout_s + LEASE_MARGIN_S

    async def run(self) -> None:
        """Until cancelled: drain, then wait for a wake-up or the repair interval."""
        while True:
            try:
                await self.drain()
            except* TRANSIENT as lost:  # claimed rows come back when their lease ends
                log.warning("callbacks_connection_error", error=str(lost.exceptions[0]))
            with anyio.move_on_after(self.settings.repair_interval_s):
                await self.requests.wake.wait()
            self.requests.wake = anyio.Event()

    async def drain(self) -> None:
        """Run every request nobody holds, a batch at a time."""
        while True:
            async with self.pool.acquire() as conn:
                for row in await conn.fetch(q("callback_given_up"), MAX_ATTEMPTS):
                    log.error("callback_given_up", **dict(row),
                              why=f"its runner died {MAX_ATTEMPTS} times while running it")
                rows = await conn.fetch(q("claim_callbacks"), CONCURRENCY, self.lease_s, MAX_ATTEMPTS)
                secrets = await self._secrets(conn) if rows else ({}, {})
            if not rows:
                return
            async with anyio.create_task_group() as tg:
                for row in rows:
                    tg.start_soon(self._run_one, row, secrets)

    async def _run_one(self, row, secrets: tuple[dict, dict]) -> None:
        """Run one claimed request; a fault of ours (not the callbacks') is logged and the
        request runs again when its lease ends, ``MAX_ATTEMPTS`` claims at most."""
        try:
            await self._run(row, secrets)
        except TRANSIENT:
            raise
        except Exception as exc:  # noqa: BLE001 - one request's fault must not stop the others
            log.exception("callback_not_run", dag_id=row["dag_id"], run_id=row["run_id"],
                          callback=row["callback"], error=f"{type(exc).__name__}: {exc}")

    async def _run(self, row, secrets: tuple[dict, dict]) -> None:
        path = callback_log_path(self.settings.logs_dir, row["dag_id"], row["run_id"])
        fields = {"dag_id": row["dag_id"], "run_id": row["run_id"], "callback": row["callback"],
                  "task_id": row["task_id"] if row["kind"] == "task" else None,
                  "map_index": row["map_index"] if row["kind"] == "task" else None,
                  "log": str(path)}
        async with self.limiter:
            await anyio.to_thread.run_sync(private_dirs, path.parent)
            result = await self.server.run_callback(request_document(row, path, *secrets),
                                                    self.settings.parse_timeout_s,
                                                    self.settings.callback_timeout_s)
        if "error" in result:
            _append(path, f"[sluice] {row['callback']} of {_where(row)}: {result['error']}\n")
            log.error("callback_failed", **fields, error=result["error"])
        elif result.get("errors"):
            log.warning("callback_failed", **fields, ran=result["ran"],
                        error="; ".join(result["errors"]))
        else:
            log.info("callback_ran", **fields, ran=result["ran"])
        async with self.pool.acquire() as conn:
            await conn.execute(q("callback_done"), row["id"])

    async def _secrets(self, conn: asyncpg.Connection) -> tuple[dict, dict]:
        """Sluice's connections (Airflow's JSON form) and variables, decrypted, for the
        callbacks' children: a callback reads them as a task does. Never logged."""
        try:
            box = secrets_for(self.settings.home)
            connections = {r["conn_id"]: json.dumps(_conn_json(r, box))
                           for r in await conn.fetch(q("callback_connections"))}
            variables = {r["key"]: (box.decrypt(r["val"]) if r["is_encrypted"] else r["val"])
                         for r in await conn.fetch(q("callback_variables"))}
        except SecretsError as exc:
            log.error("callback_secrets_unreadable", error=str(exc))
            return {}, {}
        return connections, {k: v for k, v in variables.items() if v is not None}


def _conn_json(row, box) -> dict:
    out = {k: row[k] for k in ("conn_type", "host", "schema", "login", "port") if row[k] is not None}
    for key in ("password", "extra"):
        value = box.decrypt(row[key])
        if value is not None:
            out[key] = value
    return out


def request_document(row, log_path: Path, connections: dict, variables: dict) -> dict:
    """What the callback child needs, as JSON: the DAG file, the run as the SDK's ``DagRun``,
    the instance, the callback and its reason."""
    ti = None
    if row["uuid"] is not None:
        try_number, state = row["try_number"], row["state"]
        if row["kind"] == "task":  # the failed try's, though a next try may have begun
            try_number = row["request_try"]
            state = "up_for_retry" if row["callback"] == "on_retry_callback" else "failed"
        ti = {"uuid": str(row["uuid"]), "task_id": row["task_id"], "map_index": row["map_index"],
              "try_number": try_number, "max_tries": row["max_tries"],
              "state": state, "start_date": _iso(row["start_date"]),
              "end_date": _iso(row["end_date"]), "hostname": row["hostname"],
              "queue": row["queue"], "label": row["label"]}
    return {"kind": row["kind"], "callback": row["callback"], "reason": row["reason"],
            "dag_id": row["dag_id"], "fileloc": row["fileloc"], "log_path": str(log_path),
            "dag_run": _dag_run(row), "ti": ti, "connections": connections,
            "variables": variables}


def _dag_run(row) -> dict:
    """The SDK's ``DagRun`` fields of the request's run (as the Execution API gives them)."""
    run_after = (row["data_interval_end"] if row["run_type"] == "scheduled"
                 and row["data_interval_end"] is not None
                 else row["logical_date"] or row["run_created_at"])
    return {"dag_id": row["dag_id"], "run_id": row["run_id"],
            "logical_date": _iso(row["logical_date"]),
            "data_interval_start": _iso(row["data_interval_start"]),
            "data_interval_end": _iso(row["data_interval_end"]), "run_after": _iso(run_after),
            "start_date": _iso(row["run_start_date"]), "end_date": _iso(row["run_end_date"]),
            "clear_number": row["clear_number"], "run_type": row["run_type"],
            "state": row["run_state"], "conf": row["conf"], "consumed_asset_events": [],
            "partition_key": None, "note": row["note"]}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _where(row) -> str:
    where = f"DAG {row['dag_id']!r} run {row['run_id']!r}"
    if row["kind"] == "task":
        where += f" task {row['task_id']!r} map_index {row['map_index']}"
    return where


def _append(path: Path, text: str) -> None:
    """A line of the scheduler's own in a run's callback log (0600, as the child makes it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(text)
    except OSError as exc:
        log.warning("callback_log_unwritable", log=str(path), error=str(exc))
