"""Task logs from any host, with real daemons running tries on the Task SDK.

Two workers with their own ``SLUICE_HOME`` (so their own logs folders) take
the tasks of two queues; ``sluice tasks logs`` runs with a third home, where no
log file is, and reads each try from the worker that ran it, through that
worker's log server. A try's log holds the SDK's own lines and everything the
task wrote (prints, stderr, stdlib ``logging``, ``self.log``), each line with
its time and level, one log per try; ``--follow`` prints a running task's lines
as they come and ends with the try.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from cryptography.fernet import Fernet

from tests.cluster import Cluster

pytestmark = pytest.mark.timeout(180)

DAG = """
    import logging
    import sys
    from datetime import datetime, timedelta
    from airflow.sdk import BaseOperator, dag, task

    class Hello(BaseOperator):
        def execute(self, context):
            try_number = context["ti"].try_number
            print(f"hello from alpha, try {try_number}")
            print("something went wrong on purpose", file=sys.stderr)
            logging.getLogger("airflow.task").warning("through logging, try %s", try_number)
            self.log.info("through self.log, try %s", try_number)
            if try_number == 1:
                raise RuntimeError("the first try fails on purpose")
            return [1, 2]

    @dag(schedule=None, start_date=datetime(2026, 1, 1))
    def two_hosts():
        @task(queue="beta")
        def square(n: int) -> int:
            print(f"square of {n} is {n * n}")
            return n * n

        hello = Hello(task_id="hello", queue="alpha", retries=1, retry_delay=timedelta(0))
        square.expand(n=hello.output)

    two_hosts()
"""

FOLLOW_DAG = """
    import time
    from datetime import datetime
    from pathlib import Path
    from airflow.sdk import dag, task

    @dag(schedule=None, start_date=datetime(2026, 1, 1))
    def slow_talker():
        @task
        def talk():
            print("first line", flush=True)
            deadline = time.monotonic() + 60
            while not Path({marker!r}).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            print("second line")

        talk()

    slow_talker()
"""

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} +(DEBUG|INFO|WARNING|ERROR) +(.*)$")


def home_env(cluster: Cluster, name: str, **extra: str) -> dict[str, str]:
    """The cluster's environment with a home (and logs folder) of its own."""
    home = cluster.root / name
    home.mkdir(exist_ok=True)
    return {"SLUICE_HOME": str(home), **extra}


def sluice(cluster: Cluster, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], env={**cluster.env, **env},
                          capture_output=True, text=True, timeout=60)


def log_files(home: Path) -> list[Path]:
    return sorted(p for p in (home / "logs").rglob("*.log"))


async def test_logs_read_from_the_worker_that_ran_each_try(cluster: Cluster):
    key = Fernet.generate_key().decode()  # shared by the installation's hosts, as in production
    cluster.env["SLUICE_FERNET_KEY"] = key
    cluster.write_dag("two_hosts.py", DAG)
    cluster.start("scheduler")
    alpha = home_env(cluster, "alpha", SLUICE_WORKER_QUEUES="alpha")
    beta = home_env(cluster, "beta", SLUICE_WORKER_QUEUES="beta")
    for name, env in (("worker-alpha", alpha), ("worker-beta", beta)):
        cluster.start("worker", name, SLUICE_WORKER_LOG_PORT="0",
                      SLUICE_WORKER_LOG_HOST="127.0.0.1", **env)
    await cluster.wait_dag("two_hosts", timeout=120)  # the scheduler imports Airflow first
    run_id = await cluster.trigger("two_hosts")
    doc = await cluster.wait_run(run_id, 120)
    assert doc["state"] == "success", doc
    assert cluster.by_task(doc)["hello"]["try_number"] == 2

    alpha_files = log_files(Path(alpha["SLUICE_HOME"]))
    beta_files = log_files(Path(beta["SLUICE_HOME"]))
    assert [(p.parent.name, p.name) for p in alpha_files] == [
        ("task_id=hello", "attempt=1.log"), ("task_id=hello", "attempt=2.log")]
    assert sorted(p.parent.name for p in beta_files) == ["map_index=0", "map_index=1"]
    for path in alpha_files + beta_files:  # every line: Airflow's JSON with time and level
        for line in path.read_text().splitlines():
            record = json.loads(line)
            assert record["timestamp"].endswith("Z"), record
            assert record["level"] in ("debug", "info", "warning", "error"), record

    reader = home_env(cluster, "reader")  # a third host: no log file here

    def shown(*args: str) -> list[tuple[str, str]]:
        out = sluice(cluster, reader, "tasks", "logs", "two_hosts", run_id, *args)
        assert out.returncode == 0, out.stderr
        records: list[tuple[str, str]] = []
        for line in filter(None, out.stdout.splitlines()):
            if m := LINE.match(line):  # every record: time, level, text
                records.append((m[1], m[2]))
            else:  # or the traceback of an error record
                assert records and records[-1][0] == "ERROR", out.stdout
        return records

    # the last try by default: what the task wrote, each line at its level, and the Task SDK's
    # own lines; prints and stderr are forwarded apart, so only their own order is kept
    last = shown("hello")
    assert {("INFO", "hello from alpha, try 2"), ("ERROR", "something went wrong on purpose"),
            ("WARNING", "through logging, try 2"), ("INFO", "through self.log, try 2")
            } <= set(last), last
    assert [text for level, text in last if text.startswith("Pushing xcom ")], last  # the SDK's
    assert not [text for _, text in last if "try 1" in text], last
    out = sluice(cluster, reader, "tasks", "logs", "two_hosts", run_id, "hello", "--json")
    loggers = {r["event"]: r["logger"] for r in map(json.loads, out.stdout.splitlines())}
    assert (loggers["hello from alpha, try 2"], loggers["something went wrong on purpose"],
            loggers["through logging, try 2"]) == ("task.stdout", "task.stderr", "airflow.task")
    assert loggers["through self.log, try 2"].startswith("airflow.task.operators."), loggers
    # each try has its own log: the first one's, with the SDK's report of its failure
    first = shown("hello", "--try", "1")
    assert {("INFO", "hello from alpha, try 1"), ("WARNING", "through logging, try 1"),
            ("INFO", "through self.log, try 1")} <= set(first), first
    assert [text for level, text in first
            if level == "ERROR" and text.startswith("Task failed with exception")], first
    assert not [text for _, text in first if "try 2" in text], first
    out = sluice(cluster, reader, "tasks", "logs", "two_hosts", run_id, "hello", "--try", "1")
    assert "Traceback (most recent call last):" in out.stdout, out.stdout
    assert "RuntimeError: the first try fails on purpose" in out.stdout, out.stdout
    assert not log_files(Path(reader["SLUICE_HOME"]))

    out = sluice(cluster, reader, "tasks", "logs", "two_hosts", run_id, "square",
                 "--map-index", "1", "--try", "1", "--json")
    assert out.returncode == 0, out.stderr
    records = [json.loads(x) for x in out.stdout.splitlines()]
    assert [(r["level"], r["event"]) for r in records if r.get("logger") == "task.stdout"] == [
        ("info", "square of 2 is 4")], records
    assert all(r["timestamp"].endswith("Z") for r in records), records

    out = sluice(cluster, reader, "tasks", "logs", "two_hosts", run_id, "hello", "--try", "3")
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "has no try 3" in out.stderr

    # the log server is never open: a host without the installation's key is refused
    stranger = home_env(cluster, "stranger", SLUICE_FERNET_KEY=Fernet.generate_key().decode())
    out = sluice(cluster, stranger, "tasks", "logs", "two_hosts", run_id, "hello")
    assert out.returncode == 1 and "HTTP 403" in out.stderr and "bad token" in out.stderr
    assert out.stdout == ""


async def test_follow_prints_lines_as_they_come_until_the_try_ends(cluster: Cluster):
    marker = cluster.root / "go-on"
    cluster.env["SLUICE_FERNET_KEY"] = Fernet.generate_key().decode()
    cluster.write_dag("slow_talker.py", FOLLOW_DAG.format(marker=str(marker)))
    cluster.start("scheduler")
    cluster.start("worker", SLUICE_WORKER_LOG_PORT="0", SLUICE_WORKER_LOG_HOST="127.0.0.1",
                  **home_env(cluster, "worker-home"))
    await cluster.wait_dag("slow_talker", timeout=120)  # the scheduler imports Airflow first
    run_id = await cluster.trigger("slow_talker")
    reader = {**cluster.env, **home_env(cluster, "reader")}
    follow = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "tasks", "logs", "slow_talker", run_id, "talk",
         "--follow"], env=reader, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        got: list[str] = []

        async def next_line() -> str:
            return await anyio.to_thread.run_sync(follow.stdout.readline)

        with anyio.fail_after(90):  # the Task SDK's own lines come first
            while not got or not got[-1].rstrip().endswith("first line"):
                got.append(await next_line())
                assert got[-1], got  # not the end of the output
        assert not [line for line in got if "second line" in line], got
        assert follow.poll() is None and not marker.exists()  # the task is still running
        doc = await cluster.run_doc(run_id)
        assert cluster.by_task(doc)["talk"]["state"] == "running"

        marker.touch()
        with anyio.fail_after(60):
            rest = (await anyio.to_thread.run_sync(follow.stdout.read)).splitlines()
        assert [line for line in rest if line.rstrip().endswith("second line")], rest
        assert await anyio.to_thread.run_sync(follow.wait, 30) == 0, follow.stderr.read()
        doc = await cluster.run_doc(run_id)
        assert cluster.by_task(doc)["talk"]["state"] == "success"
    finally:
        if follow.poll() is None:
            follow.kill()
        follow.wait()
        follow.stdout.close()
        follow.stderr.close()
