"""The task runner: a child process of the worker that runs task bodies.

It speaks JSON lines with its worker over a private copy of stdout (the
task's own output goes to the try's log file, each line with its time and
level: ``worker.legacy_tasklog``). The worker sends ``run``
requests; the runner asks back for upstream values (``call``) and ends each
task with one ``done`` result. It holds no database connection: everything
it needs comes through the worker. A task that crashes or wedges this
process costs one try; the worker starts a new runner.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.dagbag import DagCache
from shared import serde
from shared.sdk import macros, runtime
from shared.sdk.exceptions import (
    AirflowFailException,
    AirflowSkipException,
    AirflowTaskTimeout,
    TaskDeferred,
    UnmappableXComLengthPushed,
    UnmappableXComTypePushed,
    XComForMappingNotPushed,
)
from shared.state.retry import RetryPolicy
from shared.textcap import cap_error
from worker.lazy import LazyValueSequence, LazyXComSequence
from worker.legacy_tasklog import TaskOutput


class Channel:
    """The private JSON-lines pipe to the worker."""

    def __init__(self, inp, out):
        self.inp, self.out = inp, out
        self.next_id = 0

    def send(self, message: dict) -> None:
        self.out.write(json.dumps(message, separators=(",", ":")) + "\n")
        self.out.flush()

    def receive(self) -> dict | None:
        line = self.inp.readline()
        return json.loads(line) if line else None

    def call(self, method: str, **args: Any) -> Any:
        self.next_id += 1
        self.send({"op": "call", "id": self.next_id, "method": method, "args": args})
        reply = self.receive()
        if reply is None:
            raise SystemExit(0)
        if reply.get("error"):
            raise RuntimeError(reply["error"])
        return reply.get("value")


MAX_CACHED_LENGTHS = 4096  # task-map lengths one runner keeps (a few bytes each)


class RuntimeTaskInstance:
    """The ``ti`` of the context: identity plus ``xcom_pull``/``xcom_push``."""

    def __init__(self, req: dict, task: Any, channel: Channel,
                 map_lengths: dict[tuple, int] | None = None):
        self.dag_id, self.run_id, self.task_id = req["dag_id"], req["run_id"], req["task_id"]
        # an upstream's task-map length is fixed until the run is cleared: (run, clears, task)
        self._map_lengths = {} if map_lengths is None else map_lengths
        self._run_key = (req.get("run_pk"), req.get("clear_number"))
        self.map_index, self.try_number = req["map_index"], req["try_number"]
        self.max_tries = req["max_tries"]
        self.task = task
        self.start_date = req.get("start_date")
        self.pushed: dict[str, Any] = {}
        self._channel = channel

    def xcom_push(self, key: str, value: Any) -> None:
        serde.dumps(value, f"XCom {key!r}")
        self.pushed[key] = value

    def xcom_pull(self, task_ids: str | list[str] | None = None, key: str = "return_value",
                  map_indexes: int | list[int] | None = None, default: Any = None,
                  **_: Any) -> Any:
        if task_ids is None:
            task_ids = self.task_id
        if isinstance(task_ids, str):
            return self._pull_one(task_ids, key, map_indexes, default)
        return [self._pull_one(t, key, map_indexes, default) for t in task_ids]

    def _pull_one(self, task_id: str, key: str, map_indexes: Any, default: Any) -> Any:
        if isinstance(map_indexes, list):
            return [self._pull_one(task_id, key, i, default) for i in map_indexes]
        if task_id == self.task_id and key in self.pushed and map_indexes in (None, self.map_index):
            return self.pushed[key]
        dag = self.task.dag
        if (map_indexes is None and dag is not None and dag.has_task(task_id)
                and dag.get_task(task_id).is_mapped):
            return LazyXComSequence(self._channel.call, task_id, key)
        raw = self._channel.call("xcom_pull", task_id=task_id, key=key, map_index=map_indexes)
        return default if raw is None else serde.loads(raw)

    def pull_sequence(self, task_id: str, key: str) -> Any:
        """An upstream output to map over: fetched element by element."""
        dag = self.task.dag
        if dag is not None and dag.has_task(task_id) and dag.get_task(task_id).is_mapped:
            return LazyXComSequence(self._channel.call, task_id, key)
        length = self._map_length(task_id)
        if length is None:
            from shared.sdk.xcom_arg import as_sequence

            return as_sequence(self.pull(task_id, key), "expand")
        return LazyValueSequence(self._channel.call, task_id, key, int(length))

    def _map_length(self, task_id: str) -> int | None:
        key = (*self._run_key, task_id)
        if key not in self._map_lengths:
            length = self._channel.call("task_map_length", task_id=task_id)
            if length is None:
                return None
            if len(self._map_lengths) >= MAX_CACHED_LENGTHS:
                self._map_lengths.clear()
            self._map_lengths[key] = int(length)
        return self._map_lengths[key]

    def pull(self, task_id: str, key: str) -> Any:  # the XComArg resolver protocol
        dag = self.task.dag
        if dag is not None and dag.has_task(task_id) and dag.get_task(task_id).is_mapped:
            return LazyXComSequence(self._channel.call, task_id, key)
        return self._pull_one(task_id, key, None, None)

    def __repr__(self) -> str:
        return (f"<TaskInstance: {self.dag_id}.{self.task_id} {self.run_id} "
                f"map_index={self.map_index} try={self.try_number}>")


class DagRunInfo:
    def __init__(self, req: dict):
        self.dag_id, self.run_id, self.run_type = req["dag_id"], req["run_id"], req["run_type"]
        self.conf = req.get("conf") or {}
        self.logical_date = _dt(req["logical_date"])
        self.data_interval_start = _dt(req.get("data_interval_start"))
        self.data_interval_end = _dt(req.get("data_interval_end"))
        self.start_date = _dt(req.get("run_start_date"))

    def __repr__(self) -> str:
        return f"<DagRun {self.dag_id} @ {self.logical_date}: {self.run_id}>"


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def build_context(req: dict, dag: Any, task: Any, ti: RuntimeTaskInstance) -> dict:
    run = DagRunInfo(req)
    logical = run.logical_date
    params = {**dag.params, **task.params}
    params = {k: getattr(v, "value", v) for k, v in params.items()}
    params.update(run.conf)
    ds_nodash = logical.strftime("%Y%m%d")
    return {  # the DAG's user_defined_macros first: the context's own names win, as in Airflow
        **(getattr(dag, "user_defined_macros", None) or {}),
        "dag": dag, "task": task, "ti": ti, "task_instance": ti, "run_id": run.run_id,
        "dag_run": run, "logical_date": logical, "execution_date": logical,
        "ds": logical.strftime("%Y-%m-%d"), "ds_nodash": ds_nodash,
        "ts": logical.isoformat(), "ts_nodash": logical.strftime("%Y%m%dT%H%M%S"),
        "ts_nodash_with_tz": logical.isoformat().replace("-", "").replace(":", ""),
        "task_instance_key_str": f"{run.dag_id}__{task.task_id}__{ds_nodash}",
        "data_interval_start": run.data_interval_start, "data_interval_end": run.data_interval_end,
        "params": params, "map_index": req["map_index"], "run_type": run.run_type,
        "try_number": req["try_number"], "macros": macros, "__resolver__": ti,
    }


class TaskRunner:
    def __init__(self, dags_folder: Path, channel: Channel, max_xcom_bytes: int,
                 max_map_length: int = 1024, output: TaskOutput | None = None):
        self.cache = DagCache(dags_folder)
        self.channel = channel
        self.max_xcom_bytes = max_xcom_bytes
        self.max_map_length = max_map_length
        self.stderr_fd = os.dup(2)  # the runner's own stderr (the worker's log)
        self.output = output  # the tries' log files; None: output stays where it is (tests)
        self.map_lengths: dict[tuple, int] = {}  # see RuntimeTaskInstance

    def run(self, req: dict) -> dict:
        if self.output is not None:
            try:
                self.output.start_try(req.get("log_path"))
            except OSError as exc:  # the try is refused with the reason; the runner lives on
                return {"outcome": "retry", "retry_delay_s": None, "xcoms": [],
                        "error": f"cannot open the task log {req.get('log_path')}: {exc}"}
        try:
            result = self._run(req)
            if result.get("error"):  # the log file has it whole; the stored text is capped
                result["error"] = cap_error(result["error"])
            return result
        finally:
            if self.output is not None:
                self.output.end_try()

    def _run(self, req: dict) -> dict:
        try:
            dag = self.cache.get(req["fileloc"], req["dag_id"])
            task = dag.get_task(req["task_id"])
            task = task if task.is_mapped else task.fresh_copy()
            task._sluice_records_task_map = req["task_id"] in _expanded_producers(dag)
        except Exception as exc:  # noqa: BLE001 - reported as the try's failure
            traceback.print_exc()
            return {"outcome": "retry", "error": _error(exc), "retry_delay_s": None}
        ti = RuntimeTaskInstance(req, task, self.channel, self.map_lengths)
        context = build_context(req, dag, task, ti)
        runtime.current_context = context
        try:
            return self._execute(req, task, ti, context)
        finally:
            runtime.current_context = None

    def _execute(self, req: dict, task: Any, ti: RuntimeTaskInstance, context: dict) -> dict:
        timeout = _remaining_timeout(task, req)
        if timeout is not None:  # the worker's backstop deadline; without one it need not wake
            self.channel.send({"op": "started", "timeout_s": max(timeout, 0.0)})
        try:
            if timeout is not None and timeout <= 0:  # e.g. spent while deferred: fail fast, as Airflow
                raise AirflowTaskTimeout(_spent_message(task, req))
            _arm_timeout(timeout)
            try:
                if task.is_mapped:
                    task = task.unmap(req["map_index"], ti, context)
                    context["task"] = ti.task = task
                task.render_template_fields(context)
                task.pre_execute(context)  # Airflow's order: pre_execute, on_execute_callback
                _callback(task.on_execute_callback, context)
                if req.get("next_method"):
                    value = task.resume_execution(req["next_method"],
                                                  serde.from_jsonable(req.get("next_kwargs")), context)
                else:
                    value = task.execute(context)
                task.post_execute(context, value)
            finally:
                _arm_timeout(None)
            result = {"outcome": "success", "xcoms": self._xcoms(task, ti, value)}
            task_map = self._task_map(task, value)
            if task_map is not None:
                result["task_map"] = task_map
            result["label"] = _label(task, context, req, strict=True)  # after success, errors fail
            _callback(task.on_success_callback, context)
        except TaskDeferred as deferred:
            try:
                result = self._deferred(deferred)
                result["xcoms"] = self._xcoms(task, ti, None)
            except Exception as exc:  # noqa: BLE001 - e.g. trigger kwargs that are not JSON
                traceback.print_exc()
                result = self._retryable(task, req, context, f"cannot defer: {_error(exc)}")
        except AirflowSkipException as exc:
            print(f"Task skipped: {exc}")
            result = {"outcome": "skipped", "xcoms": self._xcoms(task, ti, None)}
            context["exception"] = exc
            _callback(task.on_skipped_callback, context)
        except AirflowFailException as exc:
            traceback.print_exc()
            result = {"outcome": "failed", "error": _error(exc), "xcoms": self._pushed(task, ti)}
            context["exception"] = exc
            _callback(task.on_failure_callback, context)
        except SystemExit as exc:
            if exc.code in (0, None):
                result = {"outcome": "success", "xcoms": self._xcoms(task, ti, None)}
                try:
                    result["label"] = _label(task, context, req, strict=True)
                except Exception as label_exc:  # noqa: BLE001 - as after any successful body
                    traceback.print_exc()
                    result = self._retryable(task, req, context, _error(label_exc))
            else:
                context["exception"] = exc
                result = self._retryable(task, req, context, f"task exited with code {exc.code}")
                result["xcoms"] = self._pushed(task, ti)
        except Exception as exc:  # noqa: BLE001 - any other error is a retryable failure
            traceback.print_exc()
            context["exception"] = exc
            result = self._retryable(task, req, context, _error(exc))
            result["xcoms"] = self._pushed(task, ti)
        if "label" not in result:
            result["label"] = _label(task, context, req)
        return result

    def _retryable(self, task: Any, req: dict, context: dict, error: str) -> dict:
        delay = RetryPolicy.of_task(task).delay_after(
            req["dag_id"], req["task_id"], req["logical_date"], req["try_number"])
        retrying = delay is not None
        _callback(task.on_retry_callback if retrying else task.on_failure_callback, context)
        return {"outcome": "retry", "error": error, "retry_delay_s": delay or 0.0}

    def _xcoms(self, task: Any, ti: RuntimeTaskInstance, value: Any) -> list[list[str]]:
        pushed = dict(ti.pushed)
        if value is not None and task.do_xcom_push:
            if task.multiple_outputs:
                if not isinstance(value, dict):
                    raise TypeError(f"Returned output was type {type(value)} expected dictionary "
                                    "for multiple_outputs")
                pushed.update({str(k): v for k, v in value.items()})
            pushed["return_value"] = value
        out = []
        for key, item in pushed.items():
            text = serde.dumps(item, f"XCom {key!r} of task {task.task_id!r}")
            if len(text) > self.max_xcom_bytes:
                raise ValueError(
                    f"XCom {key!r} of task {task.task_id!r} is {len(text)} bytes, over the "
                    f"{self.max_xcom_bytes}-byte limit (SLUICE_MAX_XCOM_BYTES): store large data "
                    "elsewhere (files, object storage) and return a reference to it")
            out.append([key, text])
        return out

    def _pushed(self, task: Any, ti: RuntimeTaskInstance) -> list[list[str]]:
        """What the body pushed before it failed: kept, as Airflow writes each push at once."""
        try:
            return self._xcoms(task, ti, None)
        except (TypeError, ValueError) as exc:  # over the size limit: the failure stands alone
            print(f"XComs pushed before the failure were not kept: {exc}")
            return []

    def _task_map(self, task: Any, value: Any) -> dict | None:
        """Length (and keys) of an output some mapped task expands over; bad outputs fail here."""
        if not getattr(task, "_sluice_records_task_map", False):
            return None
        if value is None or not task.do_xcom_push:
            raise XComForMappingNotPushed()
        if isinstance(value, str | bytes | bytearray | set | frozenset) or not (
                isinstance(value, dict) or hasattr(value, "__len__") and hasattr(value, "__getitem__")):
            raise UnmappableXComTypePushed(value)
        if len(value) > self.max_map_length:
            raise UnmappableXComLengthPushed(len(value), self.max_map_length)
        return {"length": len(value), "keys": list(value) if isinstance(value, dict) else None}

    def _deferred(self, deferred: TaskDeferred) -> dict:
        classpath, kwargs = deferred.trigger.serialize()
        timeout_at = None
        if deferred.timeout is not None:
            timeout_at = (datetime.now(UTC) + deferred.timeout).isoformat()
        return {
            "outcome": "deferred",
            "trigger": {"classpath": classpath,
                        "kwargs": serde.to_jsonable(kwargs, f"trigger {classpath} kwargs")},
            "method_name": deferred.method_name,
            "next_kwargs": serde.to_jsonable(deferred.kwargs or {}, "defer() kwargs"),
            "timeout_at": timeout_at,
        }


def _expanded_producers(dag: Any) -> set[str]:
    """Tasks whose return value some mapped task expands over (they record its length)."""
    cached = getattr(dag, "_sluice_producers", None)
    if cached is None:
        cached = {ref.operator.task_id for t in dag.tasks if t.is_mapped
                  for ref in t.expand_input.references()}
        dag._sluice_producers = cached
    return cached


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _callback(fn: Any, context: dict) -> None:
    for cb in fn if isinstance(fn, list) else [fn]:
        if cb is None:
            continue
        try:
            cb(context)
        except Exception:  # noqa: BLE001 - a callback's failure never changes the outcome
            traceback.print_exc()


def _label(task: Any, context: dict, req: dict, *, strict: bool = False) -> str | None:
    """The instance's ``map_index_template``, rendered against the context the body left.

    As in Airflow, a template that fails after a successful body fails the try
    (``strict``); after a body that raised, skipped or deferred, the body's
    outcome stands and the label is left empty.
    """
    template = getattr(task, "map_index_template", None)
    if req["map_index"] < 0 or template is None:  # "" is a template: its label is "", as in Airflow
        return None
    from shared.sdk.templating import render_string

    filters = getattr(task.dag, "user_defined_filters", None) if getattr(task, "dag", None) else None
    if strict:
        return str(render_string(template, context, filters=filters))
    try:
        return str(render_string(template, context, filters=filters))
    except Exception as exc:  # noqa: BLE001 - the body's own outcome must not be masked
        print(f"map_index_template failed to render: {exc}")
        return None


def _remaining_timeout(task: Any, req: dict) -> float | None:
    """Seconds left of ``execution_timeout``; a resumed try counts from its start (<= 0: spent)."""
    if task.execution_timeout is None:
        return None
    limit = task.execution_timeout.total_seconds()
    started = _dt(req.get("start_date"))
    if req.get("next_method") and started is not None:
        limit -= (datetime.now(UTC) - started).total_seconds()
    return limit


def _spent_message(task: Any, req: dict) -> str:
    spent = f"execution_timeout of {task.execution_timeout.total_seconds():g}s already spent"
    if req.get("next_method"):
        return f"{spent} when resuming {req['next_method']!r} (time spent deferred counts)"
    return spent


def _leave_to_the_worker(signum: int, frame: Any) -> None:
    """A stop signal sent to the worker's whole group or cgroup (Ctrl-C, ``kill -TERM -PGID``,
    systemd) is the worker's to act on: it drains, then hands back or kills this process.

    A handler rather than ``SIG_IGN``: an ignored disposition would be inherited by every
    program a task body starts, which could then no longer be stopped.
    """


def _on_alarm(signum: int, frame: Any) -> None:
    raise AirflowTaskTimeout(f"Timeout, PID: {os.getpid()}")


def _arm_timeout(seconds: float | None) -> None:
    signal.setitimer(signal.ITIMER_REAL, seconds or 0)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_DIED = signal.SIGUSR2  # what the kernel sends us when the worker dies (Linux)
HANGUP_GRACE_S = 2.0


def die_with_parent(parent_pid: int, pipe_fd: int) -> None:
    """The runner and every program its task started must not outlive the worker.

    The worker may be SIGKILLed or OOM-killed, and then it cannot clean up. So
    the runner watches for its death in two ways; either one kills the runner's
    whole process group. The runner leads that group, and a task's programs
    (``bash -c`` and what it starts) belong to it unless they leave it.

    - A thread waits for the pipe from the worker to hang up, or for the parent
      pid to change. It acts even while the task holds the main thread in C code.
    - On Linux, the kernel also sends ``PARENT_DIED`` (``PR_SET_PDEATHSIG``).
      That covers a pipe some other process still holds open. It fires on the
      death of the parent *thread* that forked us: the worker spawns from its
      event-loop thread, which is its main one. The same signal sent by anyone
      else is ignored, and a task that takes the signal over for itself still
      has the thread.

    A parent that is already gone by now is caught here.
    """
    if _arm_pdeathsig():
        signal.signal(PARENT_DIED, lambda signum, frame: _parent_gone(parent_pid) and _die())
    threading.Thread(target=_watch_parent, args=(parent_pid, pipe_fd), daemon=True,
                     name="sluice-parent-watch").start()
    if _parent_gone(parent_pid):
        _die()


def _parent_gone(parent_pid: int) -> bool:
    """The kernel reparents us before it signals the death: a signal from anyone else is
    not a death (a task's own ``kill -USR2 0``), and neither is a pipe the worker closed."""
    return os.getppid() != parent_pid


def _arm_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(PARENT_DIED), ctypes.c_ulong(0),
                          ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, pipe_fd: int) -> None:
    """Die once the worker is gone; a hang-up while it lives is its ``stop()``: leave quietly.

    A dying worker's pipes close a moment before the kernel reparents us, so a
    hang-up is given ``HANGUP_GRACE_S`` to turn into a new parent. A worker that
    closed the pipe on purpose stays our parent, and the main thread exits on EOF.
    """
    poller = select.poll()
    poller.register(pipe_fd, 0)  # no events asked: only hang-up (the worker's end closed) or error
    while not _parent_gone(parent_pid) and not poller.poll(1000):
        pass
    deadline = time.monotonic() + HANGUP_GRACE_S
    while not _parent_gone(parent_pid):
        if time.monotonic() > deadline:
            return
        time.sleep(0.02)
    _die()


def _die() -> None:
    """SIGKILL our process group if we lead it (the worker starts us so), else just us."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    """``python -m worker.runner DAGS_FOLDER MAX_XCOM_BYTES MAX_MAP_LENGTH [WORKER_PID]``."""
    proto_out = os.fdopen(os.dup(1), "w")
    proto_in = os.fdopen(os.dup(0), "r")
    die_with_parent(int(sys.argv[4]) if len(sys.argv) > 4 else os.getppid(), proto_in.fileno())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull)  # noqa: SIM115
    signal.signal(signal.SIGALRM, _on_alarm)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _leave_to_the_worker)
    channel = Channel(proto_in, proto_out)
    output = TaskOutput(os.dup(2))  # fds 1 and 2 become pipes: each line timed and levelled
    runner = TaskRunner(Path(sys.argv[1]), channel, int(sys.argv[2]), int(sys.argv[3]), output)
    while (message := channel.receive()) is not None:
        if message.get("op") == "run":
            result = runner.run(message["request"])
            channel.send({"op": "done", "result": result})


if __name__ == "__main__":
    main()
