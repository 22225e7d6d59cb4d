"""A slot: a long-lived process of the worker running task tries with Airflow's Task SDK.

Each try runs in this process through the SDK's own ``task_runner.run()`` and
``finalize()``; the SDK's supervisor request handler answers the task by
calling the Execution API at the request's ``api_url`` (one keep-alive client
per slot, the try's Bearer token swapped in). DAG files are imported once per
path and modification time.

Slots are forked by the worker's fork server (``worker.sdk_zygote``), Airflow
already imported. The worker speaks JSON lines over the slot's channel (a
socket; see ``serve``): it sends
``{"op": "run", "request": {...}}``; the slot answers ``{"op": "started",
"timeout_s": ...}`` when the task has an ``execution_timeout`` (the worker's
backstop deadline) and ends each try with ``{"op": "done", "result": {...}}``:
the state the SDK reached, whether the API took it, the error, wall and CPU
seconds. The slot holds no database credentials. A task that exits the
process, crashes it or wedges it costs that try only: the worker sees the
slot die (or kills it) and forks a new one.

SDK internals relied on (pinned 1.3.2), beyond those of ``sdk_inprocess``:
``task_runner.run`` / ``finalize`` / ``RuntimeTaskInstance.model_construct``
(as ``InProcessTestSupervisor.start`` builds it), ``_maybe_reschedule_startup_failure``
and ``_register_deserialization_allowed_classes`` (as ``task_runner.parse``), the ``Client``'s ``auth`` attribute, and ``task_runner``'s
module-level ``TypeAdapter`` name (see ``share_json_adapter``), and
``SecretsMasker.should_hide_value_for_key`` (see ``remember_sensitive_names``).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import threading
import time
import uuid
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.textcap import cap_error
from worker import sdk_tasklog


class DagFiles:
    """DAG files imported with the SDK, once per path and modification time."""

    def __init__(self, dags_folder: Path):
        self.dags_folder = dags_folder
        self._files: dict[str, tuple[int, Any]] = {}

    def task(self, fileloc: str, dag_id: str, task_id: str, log) -> Any:
        """The task object, or ``LookupError`` naming what is missing (and why, if the file failed)."""
        result = self._file(fileloc, log)
        dag = next((d for d in result.dags if d.dag_id == dag_id), None)
        if dag is None:
            why = f": {result.error.strip().splitlines()[-1]}" if result.error else ""
            raise LookupError(f"DAG {dag_id!r} not found in {fileloc}{why}")
        task = dag.task_dict.get(task_id)
        if task is None:
            raise LookupError(f"task {task_id!r} not found in DAG {dag_id!r} ({fileloc})")
        return task

    def _file(self, fileloc: str, log) -> Any:
        """The file as the scheduler's parse loads it (``shared.airflow_spec.load``), cached."""
        from airflow.sdk.execution_time.task_runner import _register_deserialization_allowed_classes

        from shared.airflow_spec.loading import FileResult, load

        path = str(Path(fileloc).resolve())
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            mtime = -1
        cached = self._files.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        result = load(Path(path), self.dags_folder).get(path) or FileResult(path)
        for dag in result.dags:
            _register_deserialization_allowed_classes(dag, log)
        self._files[path] = (mtime, result)
        return result


class Slot:
    """Runs one try after another in this process; never raises for a task's own faults."""

    def __init__(self, sink: sdk_tasklog.LogSink, forwarders, dags_folder: Path):
        import psutil
        import structlog
        from airflow.sdk.execution_time.supervisor import PsutilTracker

        from worker.sdk_elements import read_expand_input_lazily

        share_json_adapter()
        remember_sensitive_names()
        read_expand_input_lazily()
        self.sink, self.forwarders = sink, forwarders
        self.dags = DagFiles(dags_folder)
        self.process = PsutilTracker(psutil.Process())
        self.log = structlog.get_logger(logger_name="task")
        self.client = None

    def run(self, req: dict, send) -> dict:
        """Run the try ``req`` describes, its log lines going to ``req["log_path"]``."""
        import structlog

        started, cpu_started = time.monotonic(), time.process_time()
        saved_env = environment()
        structlog.contextvars.bind_contextvars(
            ti_id=req["ti_uuid"], dag_id=req["dag_id"], task_id=req["task_id"], run_id=req["run_id"],
            try_number=req["try_number"], map_index=req["map_index"])
        try:
            self.sink.open(req["log_path"])
            state, reported, error = self._run(req, send)
        except Exception as exc:  # noqa: BLE001 - e.g. the API refused the start: nothing ran
            self.log.exception("Try not run")
            state, reported, error = None, False, _describe(exc)
        finally:
            end_try_signals()
            kill_leftovers()
            for forwarder in self.forwarders:
                forwarder.drain()
            structlog.contextvars.clear_contextvars()
            self.sink.close()
            restore_environment(saved_env)
        return {"state": state, "reported": reported, "error": cap_error(error),
                "wall_s": round(time.monotonic() - started, 6),
                "cpu_s": round(time.process_time() - cpu_started, 6)}

    def _run(self, req: dict, send) -> tuple[str | None, bool, str | None]:
        from airflow.sdk._shared.secrets_masker import reset_secrets_masker
        from airflow.sdk.api.datamodels._generated import TaskInstance
        from airflow.sdk.execution_time.supervisor import set_supervisor_comms

        from worker.sdk_inprocess import TryComms, TrySupervisor

        what = TaskInstance(
            id=uuid.UUID(req["ti_uuid"]), task_id=req["task_id"], dag_id=req["dag_id"],
            run_id=req["run_id"], try_number=req["try_number"], map_index=req["map_index"],
            dag_version_id=uuid.UUID(req.get("dag_version_id") or _version_id(req["dag_id"])),
            queue=req.get("queue") or "default")
        client = self._client(req)
        sup = TrySupervisor(id=what.id, pid=os.getpid(), process=self.process,
                            process_log=self.log, client=client)
        sup.ti = what
        try:
            ti_context = _started(req) or client.task_instances.start(what.id, os.getpid(), now())
            sup._should_retry = bool(ti_context.should_retry)
            reset_secrets_masker()  # masks are per try, as they are per task process in Airflow
            with set_supervisor_comms(TryComms(sup)):
                sup._exit_code, error = self._execute(what, ti_context, req, send)
            try:  # what the supervisor does once its task process has exited
                sup.update_task_state_if_needed()
                reported = sup._pending_terminal_state_msg is None
            except Exception as exc:  # noqa: BLE001 - the API refused the end state: say so
                self.log.exception("Final state not reported")
                reported, error = False, error or _describe(exc)
            state = sup.final_state
            return str(getattr(state, "value", state)), reported, error
        finally:
            sup.close()

    def _execute(self, what, ti_context, req: dict, send) -> tuple[int, str | None]:
        """What ``task_runner.main`` does after startup; returns its exit code and the task's error."""
        from airflow.sdk.exceptions import AirflowRescheduleException
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.comms import RescheduleTask

        log = self.log
        try:
            task = self.dags.task(req["fileloc"], req["dag_id"], req["task_id"], log)
        except LookupError as exc:
            log.error("Dag or task not found during start up", error=str(exc))
            try:
                task_runner._maybe_reschedule_startup_failure(ti_context=ti_context, log=log)
            except AirflowRescheduleException as reschedule:
                task_runner.SUPERVISOR_COMMS.send(RescheduleTask(
                    reschedule_date=reschedule.reschedule_date, end_date=now()))
                return 0, str(exc)
            return 1, str(exc)
        except BaseException as exc:  # noqa: BLE001 - main()'s "Top level error": the process fails
            log.exception("Top level error")
            return 1, _describe(exc)
        timeout = getattr(task, "execution_timeout", None)
        if timeout is not None:
            send({"op": "started", "timeout_s": max(timeout.total_seconds(), 0.0)})
        with pristine_params(task):
            return self._execute_task(task, what, ti_context, log)

    def _execute_task(self, task, what, ti_context, log) -> tuple[int, str | None]:
        from airflow.sdk.api.datamodels._generated import TaskInstanceState
        from airflow.sdk.execution_time import task_runner

        try:
            ti = task_runner.RuntimeTaskInstance.model_construct(
                **what.model_dump(exclude_unset=True), task=task, _ti_context_from_server=ti_context,
                max_tries=ti_context.max_tries, start_date=ti_context.start_date or now(),
                state=TaskInstanceState.RUNNING)
            context = ti.get_template_context()
            state, _, error = task_runner.run(ti, context, log)
            context["exception"] = error
            task_runner.finalize(ti, state, context, log, error)
        except BaseException as exc:  # noqa: BLE001 - as above
            log.exception("Top level error")
            return 1, _describe(exc)
        failed_closed = getattr(ti, "_terminal_state_send_failed", False)
        return (1 if failed_closed else 0), (_describe(error) if error is not None else None)

    def _client(self, req: dict):
        """One keep-alive client per slot (per API address); each try's own token.

        Plain-HTTP addresses get ``LeanClient`` (its calls written and read directly);
        https keeps the SDK's client with httpx's TLS transport.
        """
        from airflow.sdk.api.client import BearerAuth, Client

        from worker.sdk_transport import LeanClient, LeanTransport, ResponseCookies

        if self.client is None or str(self.client.base_url) != _base(req["api_url"]):
            if self.client is not None:
                self.client.close()
            if req["api_url"].startswith("http://"):
                self.client = LeanClient(base_url=_base(req["api_url"]), token=req["token"],
                                         transport=LeanTransport())
            else:
                self.client = Client(base_url=_base(req["api_url"]), token=req["token"])
                self.client._cookies = ResponseCookies()  # the API sets none: skip the jar
        self.client.auth = BearerAuth(req["token"])
        return self.client


@contextmanager
def pristine_params(task: Any):
    """The try's DAG and task params as their file defines them, before and after the try.

    The SDK's ``process_params`` resolves a run's conf into the DAG's own ``Param``
    objects (``Param.resolve`` keeps the value it validated). A task process runs
    one try in Airflow; a slot runs many with the DAG file loaded once, so without
    this one run's conf would become the next run's defaults.
    """
    owners = [getattr(getattr(task, "dag", None), "params", None), getattr(task, "params", None)]
    saved = [(param, param.value) for params in owners if hasattr(params, "get_param")
             for param in (params.get_param(key) for key in params)]
    try:
        yield
    finally:
        for param, value in saved:
            param.value = value


def share_json_adapter() -> None:
    """One ``TypeAdapter(JsonValue)`` for the SDK's rendered fields instead of one per field.

    ``task_runner._serialize_rendered_fields`` builds a new adapter for every
    template field of every try (0.25 ms each, a quarter of a no-op's CPU); an
    adapter is immutable, so sharing one changes nothing but the cost.
    """
    from airflow.sdk.execution_time import task_runner
    from pydantic import JsonValue, TypeAdapter

    shared = TypeAdapter(JsonValue)

    def adapter(type_, *args, **kwargs):
        return shared if type_ is JsonValue and not args and not kwargs else TypeAdapter(
            type_, *args, **kwargs)

    task_runner.TypeAdapter = adapter


def remember_sensitive_names() -> None:
    """Remember the SDK's secrets masker's answer per key name instead of working it out
    for every key of every log line (a regex and a scan of the sensitive names each time:
    a tenth of a no-op try's CPU).

    The answer depends only on the name, ``hide_sensitive_var_conn_fields`` and the list of
    sensitive names, which the SDK replaces rather than edits: each is part of the key.
    """
    from airflow.sdk._shared.secrets_masker.secrets_masker import SecretsMasker

    decide = SecretsMasker.should_hide_value_for_key
    if getattr(decide, "remembers", False):
        return
    answers: dict[tuple, bool] = {}
    lists: dict[int, list] = {}  # the lists keyed on, kept so their ids are not reused

    def should_hide_value_for_key(self, name):
        if not isinstance(name, str):
            return decide(self, name)
        fields = self.sensitive_variables_fields
        key = (name, self.hide_sensitive_var_conn_fields, id(fields), len(fields))
        answer = answers.get(key)
        if answer is None:
            if len(answers) >= 8192:
                answers.clear()
                lists.clear()
            lists[id(fields)] = fields
            answer = answers[key] = decide(self, name)
        return answer

    should_hide_value_for_key.remembers = True
    should_hide_value_for_key.original = decide
    SecretsMasker.should_hide_value_for_key = should_hide_value_for_key


def _started(req: dict):
    """The start call's answer when the worker's claim already started the try (its
    ``ti_context``): the same ``TIRunContext`` the API would send, without the round trip."""
    from airflow.sdk.api.datamodels._generated import TIRunContext

    context = req.get("ti_context")
    return TIRunContext.model_validate(context) if context else None


def _base(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _version_id(dag_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sluice:dag:{dag_id}"))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def now() -> datetime:
    return datetime.now(UTC)


def environment() -> dict:
    """What ``os.environ`` holds now, for ``restore_environment`` (its encoded form when
    ``os._Environ`` has one: a copy without decoding each of a hundred variables)."""
    data = getattr(os.environ, "_data", None)
    return data.copy() if isinstance(data, dict) else dict(os.environ)


def restore_environment(saved: dict) -> None:
    """Undo what a try did to ``os.environ`` (the SDK exports ``AIRFLOW_CTX_*`` into it)."""
    data = getattr(os.environ, "_data", None)
    if isinstance(data, dict) and saved and isinstance(next(iter(saved)), bytes):
        decode = os.fsdecode  # as os.environ decodes its encoded form
        for name in data.keys() - saved.keys():
            del os.environ[decode(name)]
        for name, value in saved.items():
            if data.get(name) != value:
                os.environ[decode(name)] = decode(value)
        return
    for name in [n for n in os.environ if n not in saved]:
        del os.environ[name]
    for name, value in saved.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def end_try_signals() -> None:
    """The SDK points SIGTERM at the try's ``on_kill``; between tries SIGTERM ends the slot."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, 0)


# --- process hygiene ---------------------------------------------------------------------

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def adopt_orphans() -> None:
    """Programs a task starts that lose their parent become ours, so a try's end can stop them."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def kill_leftovers() -> None:
    """End every program the try started that is still running: they die with their try.

    As a subreaper the slot inherits orphaned grandchildren, so its children
    (``/proc/self/task/*/children``) are all of them, in turn.
    """
    while pids := _children():
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            with suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _children() -> set[int]:
    pids: set[int] = set()
    with suppress(FileNotFoundError):
        for tid in os.listdir("/proc/self/task"):
            with suppress(FileNotFoundError, ProcessLookupError):
                pids.update(int(p) for p in Path(f"/proc/self/task/{tid}/children").read_text().split())
    return pids


def die_with(*fds: int) -> None:
    """The slot and its programs must not outlive the worker nor the fork server: when
    one of ``fds`` hangs up (the worker's end of the channel: it died, or stopped us
    mid-try; the fork server's lifeline), a thread kills our programs, those that left
    our process group too, then the group. A thread, so it acts even while a task
    holds the main thread in C code."""
    def watch() -> None:
        poller = select.poll()
        for fd in fds:
            poller.register(fd, 0)  # no events asked: hang-up or error only
        poller.poll()
        kill_leftovers()
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="sluice-parent-watch").start()


def serve(channel: int, lifeline: int, dags_folder: Path) -> None:
    """Serve the worker's run requests on ``channel`` (a socket) until it closes.

    Runs in a process ``worker.sdk_zygote`` forked: fd 0 is /dev/null, 1 and 2 the
    worker's log, ``lifeline`` hangs up when the fork server dies.
    """
    proto_in, proto_out = os.fdopen(channel, "rb"), os.fdopen(os.dup(channel), "wb")
    die_with(channel, lifeline)
    adopt_orphans()
    sink = sdk_tasklog.LogSink(os.dup(2))
    slot = Slot(sink, sdk_tasklog.capture(sink), dags_folder)

    def send(message: dict) -> None:
        proto_out.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        proto_out.flush()

    while line := proto_in.readline():
        message = json.loads(line)
        if message.get("op") == "run":
            send({"op": "done", "result": slot.run(message["request"], send)})
