"""One owed callback, run in a child the parse server forked: Airflow's own callback code path.

The scheduler (``scheduler.callbacks``) sends a request naming the DAG file,
the run, the instance and which callback; the child loads the file with
Airflow's DagBag, builds the context as Airflow 3.3's DAG processor does
(``_execute_dag_callbacks``, ``_execute_task_callbacks``,
``_execute_email_callbacks``) and calls each callable (functions, lists of
them, notifiers such as ``SmtpNotifier``). Its output (the callbacks' prints
and logs, tracebacks) is appended to the run's callback log; the answer says
how many callables ran and which raised. A callback that hangs is the parse
server's to kill: nothing here holds a daemon's resources.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger("sluice.callbacks")


def redirect_output(log_path: str) -> None:
    """The child's stdout, stderr and logging go to the run's callback log (0600)."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, force=True,
                        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")


def run(request: dict, dags_folder: Path, import_timeout_s: float | None) -> dict:
    """Run one request; ``{"ran": n, "errors": [...]}`` (``errors``: one line per failure)."""
    _export_secrets(request.get("connections") or {}, request.get("variables") or {})
    where = _where(request)
    log.info("running %s of %s (reason: %s)", request["callback"], where, request["reason"])
    dag, problem = _load_dag(request, dags_folder, import_timeout_s)
    if dag is None:
        log.error("%s: %s", where, problem)
        return {"ran": 0, "errors": [problem]}
    if request["kind"] == "dag":
        return _dag_callbacks(dag, request)
    return _task_callbacks(dag, request)


def _where(request: dict) -> str:
    ti = request.get("ti")
    where = f"DAG {request['dag_id']!r} run {request['dag_run']['run_id']!r}"
    if request["kind"] == "task" and ti:
        where += f" task {ti['task_id']!r} map_index {ti['map_index']} try {ti['try_number']}"
    return where


def _export_secrets(connections: dict[str, str], variables: dict[str, str]) -> None:
    """Sluice's connections and variables as ``AIRFLOW_CONN_*`` / ``AIRFLOW_VAR_*`` for this
    child only: what a callback reads through the SDK, as a task would. The environment's
    own values win, as they do for tasks."""
    entries = [(f"AIRFLOW_CONN_{conn_id.upper()}", text) for conn_id, text in connections.items()]
    entries += [(f"AIRFLOW_VAR_{key.upper()}", value) for key, value in variables.items()]
    for name, value in entries:
        try:
            os.environ.setdefault(name, value)
        except ValueError:  # '=' or NUL in a key: no environment variable can carry it
            print(f"{name.partition('=')[0]!r}... cannot be passed to callbacks: its id "
                  "holds a character an environment variable name cannot", file=sys.stderr)


def _load_dag(request: dict, dags_folder: Path, import_timeout_s: float | None):
    """The request's DAG, from its file as it is now; ``(None, why)`` when it is not there."""
    from shared.airflow_spec.loading import load

    fileloc = request.get("fileloc")
    if not fileloc or not Path(fileloc).is_file():
        return None, f"the DAG file {fileloc!r} is gone: its callbacks cannot run"
    results = load(Path(fileloc), dags_folder, import_timeout_s)
    for result in results.values():
        for dag in result.dags:
            if dag.dag_id == request["dag_id"]:
                return dag, None
    errors = "; ".join(r.error for r in results.values() if r.error)
    return None, (f"DAG {request['dag_id']!r} is no longer defined by {fileloc}"
                  + (f": {errors}" if errors else ""))


def _dag_run(request: dict):
    from airflow.sdk.api.datamodels._generated import DagRun

    return DagRun.model_validate(request["dag_run"])


def _runtime_ti(dag, task, request: dict, dag_run, max_tries: int):
    """The SDK's ``RuntimeTaskInstance`` of the request's instance, with the run's context."""
    from airflow.sdk.api.datamodels._generated import TIRunContext
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    ti = request["ti"]
    fields = {
        "id": uuid.UUID(ti["uuid"]), "task_id": ti["task_id"], "dag_id": dag.dag_id,
        "run_id": dag_run.run_id, "try_number": ti["try_number"], "map_index": ti["map_index"],
        "dag_version_id": uuid.uuid5(uuid.NAMESPACE_URL, f"sluice:dag:{dag.dag_id}"),
        "hostname": ti.get("hostname"), "queue": ti.get("queue") or "default",
        "state": ti.get("state"), "start_date": ti.get("start_date"),
        "end_date": ti.get("end_date"), "rendered_map_index": ti.get("label"),
    }
    context = TIRunContext.model_construct(dag_run=dag_run, max_tries=max_tries, variables=[],
                                           connections=[], xcom_keys_to_clear=[])
    return RuntimeTaskInstance.model_construct(**fields, task=task, max_tries=max_tries,
                                               _ti_context_from_server=context)


def _dag_callbacks(dag, request: dict) -> dict:
    """Airflow's ``_execute_dag_callbacks``: ``dag``, ``run_id`` and ``reason``, or the full
    context of the instance the run ended on when there is one."""
    callbacks = getattr(dag, request["callback"], None)
    if not callbacks:
        log.warning("%s: the DAG has no %s any more", _where(request), request["callback"])
        return {"ran": 0, "errors": []}
    dag_run = _dag_run(request)
    context: dict[str, Any] = {"dag": dag, "run_id": dag_run.run_id, "reason": request["reason"]}
    ti = request.get("ti")
    if ti is not None:
        if ti["task_id"] in dag.task_dict:
            task = dag.get_task(ti["task_id"])
            context = _runtime_ti(dag, task, request, dag_run, task.retries).get_template_context()
            context["reason"] = request["reason"]
        else:
            log.warning("task %r of the callback's context is no longer in DAG %r: running it "
                        "with a minimal context", ti["task_id"], dag.dag_id)
    return _call_all(callbacks, context, _where(request))


def _task_callbacks(dag, request: dict) -> dict:
    """Airflow's ``_execute_task_callbacks`` (and ``_execute_email_callbacks``): the task's
    on_failure_callback or on_retry_callback with the instance's context, then its email."""
    ti = request["ti"]
    if ti["task_id"] not in dag.task_dict:
        why = f"task {ti['task_id']!r} is no longer in DAG {dag.dag_id!r}"
        log.error("%s: %s", _where(request), why)
        return {"ran": 0, "errors": [why]}
    task = dag.get_task(ti["task_id"])
    runtime_ti = _runtime_ti(dag, task, request, _dag_run(request), ti["max_tries"])
    context = runtime_ti.get_template_context()
    callbacks = getattr(task, request["callback"], None)
    result = {"ran": 0, "errors": []}
    if callbacks:
        result = _call_all(callbacks, context, _where(request))
    email_error = _email(task, runtime_ti, context, request)
    if email_error:
        result["errors"].append(email_error)
    return result


def _call_all(callbacks, context: dict, where: str) -> dict:
    """Each callable in turn; one that raises is logged and the next still runs."""
    callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
    errors = []
    for index, callback in enumerate(callbacks):
        name = getattr(callback, "__name__", type(callback).__name__)
        log.info("executing callback %d: %s", index, name)
        try:
            callback(context)
        except Exception as exc:  # noqa: BLE001 - the user's callback: logged, others still run
            log.exception("callback %d (%s) of %s failed", index, name, where)
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return {"ran": len(callbacks), "errors": errors}


class _EmailLog:
    """The logger the SDK's email sender writes to: forwards, and remembers an error."""

    def __init__(self) -> None:
        self.error_text: str | None = None

    def info(self, msg, *args, **kw) -> None:
        log.info(msg, *args)

    def warning(self, msg, *args, **kw) -> None:
        log.warning(msg, *args)

    def error(self, msg, *args, **kw) -> None:
        self.error_text = msg % args if args else msg
        log.error(msg, *args)

    def exception(self, msg, *args, **kw) -> None:
        exc = sys.exc_info()[1]
        self.error_text = (msg % args if args else msg) + (f": {type(exc).__name__}: {exc}"
                                                           if exc else "")
        log.exception(msg, *args)


def _email(task, runtime_ti, context: dict, request: dict) -> str | None:
    """``email_on_failure`` / ``email_on_retry`` as Airflow's ``_execute_email_callbacks``
    sends them (the SDK's own sender, the ``smtp_default`` connection); the error, if any."""
    from airflow.sdk.execution_time.task_runner import _send_error_email_notification

    retry = request["callback"] == "on_retry_callback"
    wanted = task.email_on_retry if retry else task.email_on_failure
    if not task.email or not wanted:
        return None
    log.info("sending the %s email of task %r to %s", "retry" if retry else "failure",
             task.task_id, task.email)
    email_log = _EmailLog()
    _send_error_email_notification(task, runtime_ti, context, Exception(request["reason"]),
                                   email_log)
    return f"email: {email_log.error_text}" if email_log.error_text else None
