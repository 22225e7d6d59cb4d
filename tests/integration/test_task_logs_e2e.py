"""Task logs from any host, with real daemons (legacy runtime).

Two workers with their own ``SLUICE_HOME`` (so their own logs folders) take
the tasks of two queues; ``sluice tasks logs`` runs with a third home, where no
log file is, and reads each try from the worker that ran it, through that
worker's log server. Every line has its time and level; ``--follow`` prints a
running task's lines as they come and ends with the try.
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

pytestmark = pytest.mark.timeout(120)

DAG = """
    import sys
    from datetime import datetime
    from shared.sdk import dag, task

    @dag(schedule=None, start_date=datetime(2026, 1, 1))
    def two_hosts():
        @task(queue="alpha")
        def hello() -> list[int]:
            print("hello from alpha")
            print("something went wrong on purpose", file=sys.stderr)
            return [1, 2]

        @task(queue="beta")
        def square(n: int) -> int:
            print(f"square of {n} is {n * n}")
            return n * n

        square.expand(n=hello())

    two_hosts()
"""

FOLLOW_DAG = """
    import time
    from datetime import datetime
    from pathlib import Path
    from shared.sdk import dag, task

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

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} +(INFO|ERROR) +(.*)$")


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
    run_id = await cluster.trigger("two_hosts")
    doc = await cluster.wait_run(run_id)
    assert doc["state"] == "success", doc

    alpha_files = log_files(Path(alpha["SLUICE_HOME"]))
    beta_files = log_files(Path(beta["SLUICE_HOME"]))
    assert [p.parent.name for p in alpha_files] == ["task_id=hello"]
    assert sorted(p.parent.name for p in beta_files) == ["map_index=0", "map_index=1"]
    for path in alpha_files + beta_files:  # every line: Airflow's JSON with time and level
        for line in path.read_text().splitlines():
            record = json.loads(line)
            assert record["timestamp"].endswith("Z") and record["level"] in ("info", "error")

    reader = home_env(cluster, "reader")  # a third host: no log file here
    out = sluice(cluster, reader, "tasks", "logs", "two_hosts", run_id, "hello")
    assert out.returncode == 0, out.stderr
    lines = [LINE.match(x) for x in out.stdout.splitlines()]
    assert all(lines), out.stdout
    assert sorted((m[1], m[2]) for m in lines) == [("ERROR", "something went wrong on purpose"),
                                                 ("INFO", "hello from alpha")]
    assert not log_files(Path(reader["SLUICE_HOME"]))

    out = sluice(cluster, reader, "tasks", "logs", "two_hosts", run_id, "square",
                 "--map-index", "1", "--try", "1", "--json")
    assert out.returncode == 0, out.stderr
    records = [json.loads(x) for x in out.stdout.splitlines()]
    assert [(r["level"], r["event"], r["logger"]) for r in records] == [
        ("info", "square of 2 is 4", "task.stdout")]

    out = sluice(cluster, reader, "tasks", "logs", "two_hosts", run_id, "hello", "--try", "2")
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "has no try 2" in out.stderr

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
    run_id = await cluster.trigger("slow_talker")
    reader = {**cluster.env, **home_env(cluster, "reader")}
    follow = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "tasks", "logs", "slow_talker", run_id, "talk",
         "--follow"], env=reader, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        got: list[str] = []

        async def next_line() -> str:
            return await anyio.to_thread.run_sync(follow.stdout.readline)

        with anyio.fail_after(60):
            got.append(await next_line())
        assert got[0].rstrip().endswith("first line"), got
        assert follow.poll() is None and not marker.exists()  # the task is still running
        doc = await cluster.run_doc(run_id)
        assert cluster.by_task(doc)["talk"]["state"] == "running"

        marker.touch()
        with anyio.fail_after(60):
            got.append(await next_line())
            rest = await anyio.to_thread.run_sync(follow.stdout.read)
        assert got[1].rstrip().endswith("second line") and rest == ""
        assert await anyio.to_thread.run_sync(follow.wait, 30) == 0, follow.stderr.read()
        doc = await cluster.run_doc(run_id)
        assert cluster.by_task(doc)["talk"]["state"] == "success"
    finally:
        if follow.poll() is None:
            follow.kill()
        follow.wait()
        follow.stdout.close()
        follow.stderr.close()
