"""DAG and task callbacks and failure emails on Sluice's real daemons.

A scheduler and a worker run as processes over ``dags_callbacks/``; the DAGs'
callbacks write what their context holds to files this test reads, and a
local SMTP server (a few lines of the protocol, on 127.0.0.1) receives the
emails through the ``smtp_default`` connection stored with ``sluice
connections add``. DAG callbacks run in a child of the scheduler's parse
server when a run ends (success, task failure, ``dagrun_timeout``); a try
whose worker dies gets its task's ``on_failure_callback`` and
``email_on_failure`` from there too; a try that fails in its slot runs its
own, once. A callback that raises or hangs leaves the scheduler running.
"""

from __future__ import annotations

import json
import os
import signal
import socketserver
import threading
from email import message_from_bytes
from email.header import decode_header, make_header
from pathlib import Path

import pytest

from tests.cluster import Cluster, own_cluster, wait_for

pytestmark = pytest.mark.timeout(420)

DAGS = Path(__file__).parent / "dags_callbacks"
RUN_TIMEOUT_S = 90.0
CALLBACK_TIMEOUT_S = 90.0
HANG_KILL_S = 10  # SLUICE_CALLBACK_TIMEOUT_S: a hanging callback's child is killed after it


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    def handle(self) -> None:
        self._say(b"220 127.0.0.1 test SMTP")
        rcpt: list[str] = []
        while line := self.rfile.readline():
            verb = line.strip().split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                self._say(b"250-127.0.0.1\r\n250 8BITMIME")
            elif verb == b"RCPT":
                rcpt.append(line.decode().split(":", 1)[1].strip().strip("<>"))
                self._say(b"250 OK")
            elif verb == b"DATA":
                self._say(b"354 go on")
                body = b"".join(iter(lambda: self.rfile.readline(), b".\r\n"))
                self.server.mails.append({"to": rcpt, "message": message_from_bytes(body)})
                rcpt = []
                self._say(b"250 OK")
            elif verb == b"QUIT":
                self._say(b"221 bye")
                return
            elif verb in (b"HELO", b"MAIL", b"RSET", b"NOOP"):
                self._say(b"250 OK")
            else:
                self._say(b"502 not implemented")

    def _say(self, text: bytes) -> None:
        self.wfile.write(text + b"\r\n")
        self.wfile.flush()


class SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SmtpHandler)
        self.mails: list[dict] = []

    def to(self, address: str) -> list:
        return [m["message"] for m in self.mails if address in m["to"]]


def subject(message) -> str:
    return str(make_header(decode_header(message["Subject"])))


def body(message) -> str:
    """The text of a received email's parts."""
    return "".join(part.get_payload(decode=True).decode() for part in message.walk()
                   if part.get_content_maintype() == "text")


@pytest.fixture(scope="module")
def smtp():
    server = SmtpServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
async def cluster(services, template_db, tmp_path_factory, smtp):
    root = tmp_path_factory.mktemp("callbacks")
    async with own_cluster(services, template_db, root, name="cb", dags=DAGS) as cluster:
        (root / "out").mkdir()
        port = smtp.server_address[1]
        out = cluster.cli("connections", "add", "smtp_default", "--conn-uri",
                          f"smtp://127.0.0.1:{port}/?disable_ssl=true&disable_tls=true"
                          "&retry_limit=0&timeout=10&from_email=sluice%40example.com")
        assert out.returncode == 0, out.stderr
        cluster.start("scheduler", SLUICE_CALLBACK_TIMEOUT_S=str(HANG_KILL_S))
        cluster.start("worker")
        cluster.start("triggerer")
        yield cluster


def out(cluster: Cluster, name: str) -> Path:
    return cluster.root / "out" / name


async def lines(cluster: Cluster, name: str, count: int = 1) -> list[dict]:
    """The JSON lines a callback wrote, once there are ``count``."""
    path = out(cluster, f"{name}.jsonl")

    async def written():
        if not path.exists():
            return None
        found = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        return found if len(found) >= count else None

    return await wait_for(written, CALLBACK_TIMEOUT_S, f"callback {name} to write {count}")


def callback_log(cluster: Cluster, dag_id: str, run_id: str) -> Path:
    return (cluster.root / "home" / "logs" / "callbacks" / f"dag_id={dag_id}"
            / f"run_id={run_id}.log")


async def until_logged(path: Path, text: str) -> str:
    async def found():
        return path.exists() and text in path.read_text()

    await wait_for(found, CALLBACK_TIMEOUT_S, f"{text!r} in {path}")
    return path.read_text()


async def test_dag_success_callbacks_run_with_the_run_context(cluster):
    run_id = await cluster.trigger("cb_success")
    assert (await cluster.wait_run(run_id, RUN_TIMEOUT_S))["state"] == "success"
    for name in ("success_a", "success_b"):  # a list: each callable, in order
        (line,) = await lines(cluster, name)
        assert line["reason"] == "success"
        assert line["run_id"] == line["dag_run"] == run_id
        assert line["run_state"] == "success"
        assert line["dag_id"] == "cb_success"
        assert line["task_id"] == "second"  # the last instance that succeeded, as Airflow
        assert line["params"] == {"who": "sluice"}
        assert line["pid"] != cluster.procs["scheduler"].pid
    text = await until_logged(callback_log(cluster, "cb_success", run_id), "success_b")
    assert "executing callback 0: success_a" in text
    assert not out(cluster, "success_never.jsonl").exists()


async def test_task_failure_runs_dag_callbacks_notifier_and_emails(cluster, smtp):
    run_id = await cluster.trigger("cb_failure")
    doc = await cluster.wait_run(run_id, RUN_TIMEOUT_S)
    assert doc["state"] == "failed"
    assert cluster.by_task(doc)["boom"]["state"] == "failed"
    (line,) = await lines(cluster, "dag_failure")
    assert line["reason"] == "task_failure"
    assert line["task_id"] == "boom"  # the instance that failed the run
    assert line["run_state"] == "failed"
    # the SmtpNotifier of the DAG's on_failure_callback, rendered with the run's context
    mails = await wait_for(lambda: _async(smtp.to("dag-owner@example.com")),
                           CALLBACK_TIMEOUT_S, "the DAG notifier's email")
    assert subject(mails[0]) == f"run {run_id} of cb_failure failed"
    # the task failed in its slot: the Task SDK ran its callback and email there, once
    task_mails = await wait_for(lambda: _async(smtp.to("ops@example.com")),
                                CALLBACK_TIMEOUT_S, "email_on_failure")
    assert "boom" in subject(task_mails[0])
    assert "boom in the task" in body(task_mails[0])
    # upstream_failed gets no callback, as in Airflow (the trigger rule sets it)
    assert cluster.by_task(doc)["after"]["state"] == "upstream_failed"
    assert not out(cluster, "upstream_failed_never.jsonl").exists()
    assert len(await lines(cluster, "task_failure_in_slot")) == 1
    assert len(smtp.to("ops@example.com")) == 1


async def test_timed_out_run_gets_its_failure_callback(cluster):
    run_id = await cluster.trigger("cb_timeout")
    assert (await cluster.wait_run(run_id, RUN_TIMEOUT_S))["state"] == "failed"
    (line,) = await lines(cluster, "timed_out")
    assert line["reason"] == "timed_out"
    assert line["task_id"] == "sleeper"  # the unfinished instance, as Airflow gives it


async def test_raising_and_hanging_callbacks_leave_the_scheduler_running(cluster):
    hanging = await cluster.trigger("cb_hanging")
    raising = await cluster.trigger("cb_raising")
    assert (await cluster.wait_run(raising, RUN_TIMEOUT_S))["state"] == "success"
    assert (await cluster.wait_run(hanging, RUN_TIMEOUT_S))["state"] == "success"
    # a callback that raises is logged; the next one of the list still runs
    await wait_for(lambda: _async(out(cluster, "after_raise").exists()), CALLBACK_TIMEOUT_S,
                   "the callback after the raising one")
    assert out(cluster, "after_raise").read_text() == "success"
    text = await until_logged(callback_log(cluster, "cb_raising", raising), "after_raise")
    assert "raising callback says hello" in text
    assert "ZeroDivisionError: the callback divided by zero" in text
    # a callback that hangs is killed at SLUICE_CALLBACK_TIMEOUT_S
    text = await until_logged(callback_log(cluster, "cb_hanging", hanging), "killed")
    assert out(cluster, "hanging_started").exists()
    assert "SLUICE_CALLBACK_TIMEOUT_S" in text
    assert cluster.procs["scheduler"].poll() is None
    assert "callback_failed" in cluster.log("scheduler")
    # and the scheduler goes on: a new run ends and its callbacks run
    path = out(cluster, "success_a.jsonl")
    before = len(path.read_text().splitlines()) if path.exists() else 0
    again = await cluster.trigger("cb_success")
    assert (await cluster.wait_run(again, RUN_TIMEOUT_S))["state"] == "success"
    assert (await lines(cluster, "success_a", before + 1))[-1]["run_id"] == again
    conn = await cluster.connect()
    try:
        await wait_for(lambda: _owed(conn), CALLBACK_TIMEOUT_S, "no callback owed")
    finally:
        await conn.close()


async def test_killed_slot_gets_its_retry_callback_across_a_scheduler_restart(cluster):
    run_id = await cluster.trigger("cb_killed")
    pid = await wait_for(lambda: _async(_read(out(cluster, "killed_pid"))), RUN_TIMEOUT_S,
                         "the try to start")
    cluster.stop("scheduler")  # the request is kept in PostgreSQL until a scheduler runs it
    os.kill(int(pid), signal.SIGKILL)  # its slot dies: the worker fails the try
    conn = await cluster.connect()
    try:
        owed = await wait_for(lambda: conn.fetch("SELECT kind, callback FROM callback_request"),
                              RUN_TIMEOUT_S, "the worker to record the owed callback")
    finally:
        await conn.close()
    assert [tuple(r) for r in owed] == [("task", "on_retry_callback")]
    assert not out(cluster, "killed_retry.jsonl").exists()
    cluster.start("scheduler", SLUICE_CALLBACK_TIMEOUT_S=str(HANG_KILL_S))
    (line,) = await lines(cluster, "killed_retry")
    assert line["task_id"] == "victim" and line["try_number"] == 1
    assert line["run_id"] == run_id
    doc = await cluster.wait_run(run_id, RUN_TIMEOUT_S)  # the second try succeeds
    assert doc["state"] == "success"
    assert cluster.by_task(doc)["victim"]["try_number"] == 2
    assert not out(cluster, "killed_failure.jsonl").exists()


async def test_try_wedged_past_its_execution_timeout_gets_its_failure_callback(cluster):
    run_id = await cluster.trigger("cb_wedged")
    doc = await cluster.wait_run(run_id, RUN_TIMEOUT_S)
    assert cluster.by_task(doc)["wedged"]["state"] == "failed"
    (line,) = await lines(cluster, "wedged_failure")
    assert line == {"task_id": "wedged", "try_number": 1, "run_id": run_id}
    text = await until_logged(callback_log(cluster, "cb_wedged", run_id), "wedged_failure")
    assert "execution_timeout of 1s exceeded" in text  # the reason the worker gave


async def test_trigger_failed_task_gets_its_failure_callback(cluster):
    run_id = await cluster.trigger("cb_trigger_fail")
    doc = await cluster.wait_run(run_id, RUN_TIMEOUT_S)
    assert cluster.by_task(doc)["deferred"]["state"] == "failed"
    (line,) = await lines(cluster, "trigger_failure")
    assert line == {"task_id": "deferred", "try_number": 1, "run_id": run_id}


async def test_zombie_gets_its_failure_callback_and_email(cluster, smtp):
    run_id = await cluster.trigger("cb_zombie")
    await wait_for(lambda: _async(out(cluster, "zombie_started").exists()), RUN_TIMEOUT_S,
                   "the task to start")
    cluster.signal("worker", signal.SIGKILL)  # the worker and its slots die with the try
    doc = await cluster.wait_run(run_id, RUN_TIMEOUT_S)
    assert doc["state"] == "failed"
    assert cluster.by_task(doc)["hang"]["state"] == "failed"
    (line,) = await lines(cluster, "zombie_failure")
    assert line == {"task_id": "hang", "try_number": 1, "map_index": -1, "run_id": run_id,
                    "dag_run": run_id, "ds": line["ds"]}
    assert line["ds"]  # the full task context: the run's logical date
    assert not out(cluster, "zombie_retry").exists()
    mails = await wait_for(lambda: _async([m for m in smtp.to("ops@example.com")
                                           if "hang" in subject(m)]),
                           CALLBACK_TIMEOUT_S, "the zombie's email_on_failure")
    assert "heartbeat expired: its worker died" in body(mails[0])  # the failure as the error
    log = callback_log(cluster, "cb_zombie", run_id).read_text()
    assert "zombie_failure" in log


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


async def _async(value):
    return value


async def _owed(conn) -> bool:
    return await conn.fetchval("SELECT count(*) FROM callback_request") == 0
