"""Task logs in the Task SDK runtime: Airflow's format, read from another host.

A worker with its own ``SLUICE_HOME`` runs an unmodified Airflow DAG (prints,
``self.log``, stdlib logging, a failure with its traceback);
``sluice tasks logs`` with another home reads each try through the worker's
log server: every line is Airflow's JSON with time and level, shown readably on
a terminal and raw with ``--json``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from tests.cluster import Cluster

pytestmark = pytest.mark.timeout(180)

DAG = """
    import logging
    import sys
    from datetime import datetime

    from airflow.sdk import BaseOperator, dag, task

    class Speak(BaseOperator):
        def execute(self, context):
            print("printed line")
            print("printed to stderr", file=sys.stderr)
            logging.getLogger("airflow.task").warning("a warning, %s", "formatted")
            self.log.info("from the operator's logger")
            return 1

    @dag(schedule=None, start_date=datetime(2026, 1, 1))
    def sdk_logged():
        @task(retries=0)
        def fail():
            raise ValueError("failed on purpose")

        Speak(task_id="speak") >> fail()

    sdk_logged()
"""
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} +(DEBUG|INFO|WARNING|ERROR) +(.*)$")


def sluice(cluster: Cluster, home: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared.cli", *args],
                          env={**cluster.env, "SLUICE_HOME": home}, capture_output=True,
                          text=True, timeout=60)


async def test_sdk_task_logs_have_time_and_level_and_are_read_from_any_host(cluster: Cluster):
    cluster.env.pop("AIRFLOW_HOME", None)  # the daemons' own: $SLUICE_HOME/airflow
    cluster.env["SLUICE_FERNET_KEY"] = Fernet.generate_key().decode()
    cluster.write_dag("sdk_logged.py", DAG)
    worker_home = cluster.root / "worker-home"
    cluster.start("scheduler")
    cluster.start("worker", SLUICE_HOME=str(worker_home), SLUICE_WORKER_LOG_PORT="0",
                  SLUICE_WORKER_LOG_HOST="127.0.0.1")
    await cluster.wait_dag("sdk_logged", timeout=60)
    run_id = await cluster.trigger("sdk_logged")
    doc = await cluster.wait_run(run_id, timeout=90)
    states = {t["task_id"]: t["state"] for t in doc["tasks"]}
    assert states == {"speak": "success", "fail": "failed"}, doc

    files = sorted((worker_home / "logs").rglob("*.log"))
    assert [p.parent.name for p in files] == ["task_id=fail", "task_id=speak"]
    for path in files:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            assert record["timestamp"].endswith("Z") and record["level"] and "event" in record

    reader = str(cluster.root / "reader")
    out = sluice(cluster, reader, "tasks", "logs", "sdk_logged", run_id, "speak", "--json")
    assert out.returncode == 0, out.stderr
    records = [json.loads(x) for x in out.stdout.splitlines()]
    events = {(r["level"], r["event"]) for r in records}
    assert {("info", "printed line"), ("error", "printed to stderr"),
            ("warning", "a warning, formatted"),
            ("info", "from the operator's logger")} <= events, events
    assert all(r["timestamp"].endswith("Z") for r in records)

    out = sluice(cluster, reader, "tasks", "logs", "sdk_logged", run_id, "speak")
    assert out.returncode == 0, out.stderr
    shown = [LINE.match(x) for x in out.stdout.splitlines() if x and not x.startswith(" ")]
    assert all(shown), out.stdout
    assert ("INFO", "printed line") in [(m[1], m[2]) for m in shown]

    out = sluice(cluster, reader, "tasks", "logs", "sdk_logged", run_id, "fail")
    assert out.returncode == 0, out.stderr
    assert "Traceback (most recent call last):" in out.stdout
    assert "ValueError: failed on purpose" in out.stdout
    assert not (cluster.root / "reader" / "logs").exists()
