"""Pausing, params and pools through the real daemons and the ``sluice`` command line.

- A new DAG starts paused with ``SLUICE_DAGS_ARE_PAUSED_AT_CREATION`` (Airflow's
  default) unless it sets ``is_paused_upon_creation``; a run triggered while it is
  paused is created ``queued`` and starts when it is unpaused (Airflow 3), and the
  trigger says so in one line.
- A conf the DAG's ``Param`` schemas refuse creates no run; the run's params are
  what its tasks see (``{{ params.x }}``, ``context["params"]``), defaults filling
  what the conf leaves out.
- Pools: slots hold instances back across runs, a task needing more slots than
  its pool has or naming an unknown pool waits (and says why once), and a pool
  that queued or running instances hold is not deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import anyio
import pytest

from tests.api_server import call, login, start_api_server
from tests.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(420)
PARSE_S = 120.0  # the daemons import Airflow before their first parse
RUN_S = 120.0


async def cli(cluster: Cluster, *args: str):
    return await anyio.to_thread.run_sync(lambda: cluster.cli(*args))


async def run_state(cluster: Cluster, run_id: str) -> str:
    return (await cluster.run_doc(run_id))["state"]


PARAMED = """
    from datetime import datetime
    from airflow.sdk import Param, dag, task
    from airflow.providers.standard.operators.bash import BashOperator

    @dag(schedule=None, start_date=datetime(2026, 1, 1),
         params={"n": Param(5, type="integer", minimum=1), "label": "plain"})
    def paramed():
        @task
        def seen(params=None):
            from airflow.sdk import get_current_context
            return {"n": params["n"], "label": params["label"],
                    "context": get_current_context()["params"]["n"]}
        seen() >> BashOperator(task_id="rendered", bash_command="echo {{ params.n }}",
                               do_xcom_push=True)
    paramed()
"""

EAGER = """
    from datetime import datetime
    from airflow.sdk import dag, task

    @dag(schedule=None, start_date=datetime(2026, 1, 1), is_paused_upon_creation=False)
    def eager():
        @task
        def one():
            return 1
        one()
    eager()
"""


async def test_paused_dags_keep_triggered_runs_queued_and_params_validate_every_trigger(
        cluster: Cluster):
    cluster.write_dag("paramed.py", PARAMED)
    cluster.write_dag("eager.py", EAGER)
    cluster.start("scheduler", SLUICE_DAGS_ARE_PAUSED_AT_CREATION="true")
    # one slot: every try runs in the same process, so one run's conf must not become the
    # next run's defaults (a slot keeps the DAG file loaded between tries)
    cluster.start("worker", SLUICE_WORKER_CONCURRENCY="1")
    await cluster.wait_dag("paramed", PARSE_S)
    await cluster.wait_dag("eager", PARSE_S)

    listed = json.loads((await cli(cluster, "dags", "list", "--json")).stdout)
    assert {d["dag_id"]: d["is_paused"] for d in listed["dags"]} == {"eager": False,
                                                                    "paramed": True}

    refused = await cli(cluster, "dags", "trigger", "paramed", "--conf", '{"n": 0}')
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "DAG 'paramed' is paused: its run stays queued until `sluice dags unpause paramed`",
        "DAG 'paramed': invalid input for param 'n': 0 is less than the minimum of 1"]

    waited = await cli(cluster, "dags", "trigger", "paramed", "--conf", '{"n": 3}', "--wait",
                       "--json", "--timeout", "3")
    assert waited.returncode == 3, waited.stderr
    notice, gave_up = waited.stderr.splitlines()
    assert notice.startswith("DAG 'paramed' is paused: its run stays queued")
    assert gave_up == "gave up waiting after 3s (run is queued)"
    queued_id = json.loads(waited.stdout)["run_id"]
    defaults_id = await cluster.trigger("paramed")  # no conf: the defaults
    eager_doc = await cluster.wait_run(await cluster.trigger("eager"), RUN_S)
    assert eager_doc["state"] == "success"  # the scheduler had its passes meanwhile
    assert [await run_state(cluster, r) for r in (queued_id, defaults_id)] == ["queued", "queued"]

    unpaused = await cli(cluster, "dags", "unpause", "paramed", "--json")
    assert json.loads(unpaused.stdout) == {"dag_id": "paramed", "is_paused": False,
                                           "was_paused": True}
    for run_id, n in ((queued_id, 3), (defaults_id, 5)):
        doc = await cluster.wait_run(run_id, RUN_S)
        tasks = cluster.by_task(doc)
        assert doc["state"] == "success"
        assert tasks["seen"]["return_value"] == {"n": n, "label": "plain", "context": n}
        assert tasks["rendered"]["return_value"] == str(n)
    again = await cli(cluster, "dags", "unpause", "paramed")
    assert again.stdout == "DAG paramed was already unpaused\n"

    paused = await cli(cluster, "dags", "pause", "paramed")
    assert (paused.returncode, paused.stdout) == (0, "DAG paramed paused\n")
    held_id = await cluster.trigger("paramed", {"n": 7})
    assert (await cluster.wait_run(await cluster.trigger("eager"), RUN_S))["state"] == "success"
    assert await run_state(cluster, held_id) == "queued"
    assert (await cli(cluster, "dags", "unpause", "paramed")).returncode == 0
    assert (await cluster.wait_run(held_id, RUN_S))["state"] == "success"

    unknown = await cli(cluster, "dags", "pause", "nope")
    assert (unknown.returncode, unknown.stderr.count("\n")) == (2, 1)
    assert unknown.stderr.startswith("DAG 'nope' not found")


async def test_the_rest_api_refuses_a_conf_the_params_refuse_and_its_pause_reaches_the_scheduler(
        cluster: Cluster):
    cluster.write_dag("paramed.py", PARAMED)
    cluster.write_dag("eager.py", EAGER)
    cluster.start("scheduler")
    cluster.start("worker")
    await cluster.wait_dag("paramed", PARSE_S)
    base = await start_api_server(cluster, {"ana": ("admin", "ana-pw")})
    token = await anyio.to_thread.run_sync(login, base, "ana", "ana-pw")

    async def rest(path: str, method: str, body: dict):
        return await anyio.to_thread.run_sync(
            lambda: call(f"{base}/api/v2{path}", method, body, token=token))

    status, body = await rest("/dags/paramed/dagRuns", "POST",
                              {"logical_date": None, "conf": {"n": "many"}})
    assert (status, body) == (400, {"detail": "DAG 'paramed': invalid input for param 'n': "
                                              "'many' is not of type 'integer'"})
    status, body = await rest("/dags/paramed", "PATCH", {"is_paused": True})
    assert (status, body["is_paused"]) == (200, True)
    status, body = await rest("/dags/paramed/dagRuns", "POST",
                              {"logical_date": None, "conf": {"n": 9}})
    assert (status, body["state"]) == (200, "queued")
    run_id = body["dag_run_id"]
    assert (await cluster.wait_run(await cluster.trigger("eager"), RUN_S))["state"] == "success"
    assert await run_state(cluster, run_id) == "queued"
    assert (await rest("/dags/paramed", "PATCH", {"is_paused": False}))[0] == 200
    doc = await cluster.wait_run(run_id, RUN_S)
    assert cluster.by_task(doc)["seen"]["return_value"] == {"n": 9, "label": "plain",
                                                            "context": 9}


POOLED = """
    import time
    from datetime import datetime
    from pathlib import Path
    from airflow.sdk import dag, task

    GATE = Path({gate!r})

    @dag(schedule=None, start_date=datetime(2026, 1, 1))
    def pooled():
        @task(pool="tiny")
        def holder():
            while not GATE.exists():
                time.sleep(0.05)

        @task(pool="tiny")
        def serial(x):
            time.sleep(0.3)
            return x

        @task(pool="tiny", pool_slots=2)
        def wide():
            return "wide"

        @task(pool="nowhere")
        def lost():
            return "found"

        holder() >> serial.expand(x=[1, 2, 3]) >> wide()
        lost()
    pooled()
"""


def overlaps(intervals: list[tuple]) -> int:
    """The most intervals open at one moment."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


async def test_pools_hold_instances_to_their_slots_and_refuse_deletion_while_held(
        cluster: Cluster, tmp_path):
    gate = tmp_path / "gate"
    created = await cli(cluster, "pools", "set", "tiny", "1", "one at a time")  # Airflow's form
    assert (created.returncode, created.stdout) == (0, "Pool tiny created\n")
    deferred = await cli(cluster, "pools", "set", "tiny", "1", "--include-deferred")
    assert (deferred.returncode, deferred.stderr) == (2, (
        "pool 'tiny': --include-deferred is not supported by Sluice (deferred task instances "
        "never hold pool slots)\n"))
    cluster.write_dag("pooled.py", POOLED.format(gate=str(gate)))
    cluster.start("scheduler")
    cluster.start("worker")
    run_id = await cluster.trigger("pooled")

    async def holder_running():
        return cluster.by_task(await cluster.run_doc(run_id))["holder"]["state"] == "running"

    await wait_for(holder_running, RUN_S, "holder to run in pool tiny")
    got = json.loads((await cli(cluster, "pools", "get", "tiny", "--json")).stdout)
    assert got == {"pool": "tiny", "slots": 1, "description": "one at a time",
                   "running_slots": 1, "queued_slots": 0, "open_slots": 0}
    held = await cli(cluster, "pools", "delete", "tiny")
    assert held.returncode == 1
    assert held.stderr == (f"pool 'tiny' is held by 1 queued or running task instance(s) "
                           f"(DAG 'pooled' run '{run_id}' task 'holder' running): "
                           "delete it when they finish\n")
    assert (await cli(cluster, "pools", "delete", "default_pool")).stderr == \
        "default_pool cannot be deleted\n"
    gate.touch()

    async def waiting_for_pools():
        log = cluster.log("scheduler")
        return ("pool 'nowhere' does not exist" in log
                and "needs 2 slots of pool 'tiny', which has 1" in log
                and "Dag 'pooled' references non-existent pools: ['nowhere']" in log)

    await wait_for(waiting_for_pools, RUN_S, "the scheduler to say why wide and lost wait")
    tasks = cluster.by_task(await cluster.run_doc(run_id))
    assert {tasks["wide"]["state"], tasks["lost"]["state"]} <= {None, "scheduled"}  # waiting

    assert (await cli(cluster, "pools", "set", "tiny", "2")).stdout == "Pool tiny updated\n"
    assert (await cli(cluster, "pools", "set", "nowhere", "1")).returncode == 0
    doc = await cluster.wait_run(run_id, RUN_S)
    assert doc["state"] == "success"
    serial = [t for t in doc["tasks"] if t["task_id"] == "serial"]
    assert overlaps([(t["start_date"], t["end_date"]) for t in serial]) == 1  # one slot then

    listed = json.loads((await cli(cluster, "pools", "list", "--json")).stdout)
    assert listed == [
        {"pool": "default_pool", "slots": 128, "description": "Default pool",
         "running_slots": 0, "queued_slots": 0, "open_slots": 128},
        {"pool": "nowhere", "slots": 1, "description": None,
         "running_slots": 0, "queued_slots": 0, "open_slots": 1},
        {"pool": "tiny", "slots": 2, "description": "one at a time",
         "running_slots": 0, "queued_slots": 0, "open_slots": 2}]
    assert (await cli(cluster, "pools", "delete", "tiny")).stdout == "Pool tiny deleted\n"
    gone = await cli(cluster, "pools", "get", "tiny")
    assert (gone.returncode, gone.stderr) == (2, "Pool tiny does not exist\n")


async def test_standalone_starts_new_dags_unpaused_so_the_first_trigger_runs(
        cluster: Cluster, tmp_path):
    """The README's first trigger: ``sluice standalone`` makes new DAGs start unpaused."""
    cluster.write_dag("hello.py", """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def hello():
            @task
            def say():
                return "hello"
            say()
        hello()
    """)
    env = {k: v for k, v in cluster.env.items() if k != "SLUICE_DAGS_ARE_PAUSED_AT_CREATION"}
    with open(tmp_path / "standalone.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "standalone"], env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        await cluster.wait_dag("hello", PARSE_S)
        listed = json.loads((await cli(cluster, "dags", "list", "--json")).stdout)
        assert [(d["dag_id"], d["is_paused"]) for d in listed["dags"]] == [("hello", False)]
        doc = await cluster.wait_run(await cluster.trigger("hello"), RUN_S)
        assert cluster.by_task(doc)["say"]["return_value"] == "hello"
    finally:
        if proc.poll() is None:  # a stop request first: it stops every daemon it started
            os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
