"""Operations: supervision, draining, reconnecting, hostile input, many daemons at once.

Every daemon is a real process (tests/cluster.py). Faults that would hurt
other tests (restarting or flushing a server) go only to servers owned by the
test (tests/faults/__init__.py). Every wait is on a condition with a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.cluster import Cluster, own_cluster, wait_for
from tests.faults import OwnedPostgres, OwnedValkey

pytestmark = pytest.mark.timeout(240)

DAEMONS = ("scheduler", "triggerer", "worker")

#: Each daemon imports Airflow as it starts, and the scheduler parses with it: generous on a
#: loaded machine; every wait ends as soon as its condition holds.
START_S = 120.0
RUN_S = 120.0


# --------------------------------------------------------------------- helpers


async def wait_exit(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    async def exited():
        return proc.poll() is not None

    await wait_for(exited, timeout, f"pid {proc.pid} to exit")
    return proc.returncode


async def trigger(cluster: Cluster, dag_id: str) -> str:
    """Trigger ``dag_id`` once the scheduler has parsed it; the new run's id."""
    await cluster.wait_dag(dag_id, timeout=START_S)
    return await cluster.trigger(dag_id)


async def wait_log(cluster: Cluster, name: str, event: str, timeout: float = START_S) -> None:
    """Until daemon ``name`` has logged ``event`` (e.g. ``worker_ready``)."""
    async def logged():
        return f'"{event}"' in cluster.log(name)

    await wait_for(logged, timeout, f"{name} to log {event}")


async def ti_state(cluster: Cluster, run_id: str, task_id: str) -> dict | None:
    conn = await cluster.connect()
    try:
        row = await conn.fetchrow(
            "SELECT ti.state, ti.try_number, ti.error, ti.worker_id FROM task_instance ti"
            " JOIN dag_run r ON r.id = ti.run_pk WHERE r.run_id = $1 AND ti.task_id = $2",
            run_id, task_id)
        return dict(row) if row else None
    finally:
        await conn.close()


async def wait_ti(cluster: Cluster, run_id: str, task_id: str, state: str,
                  timeout: float = 30.0) -> dict:
    async def reached():
        row = await ti_state(cluster, run_id, task_id)
        return row if row and row["state"] == state else None

    return await wait_for(reached, timeout, f"{task_id} to be {state}")


def assert_alive(cluster: Cluster, *names: str) -> None:
    for name in names or list(cluster.procs):
        code = cluster.procs[name].poll()
        assert code is None, f"{name} exited with {code}:\n{cluster.log(name)[-3000:]}"


async def wait_run_alive(cluster: Cluster, run_id: str, timeout: float = 60.0) -> dict:
    """Like ``Cluster.wait_run``, but fails at once when a daemon has died."""
    async def finished():
        assert_alive(cluster)
        doc = await cluster.run_doc(run_id)
        return doc if doc["state"] in ("success", "failed") else None

    return await wait_for(finished, timeout, f"run {run_id} to finish")


def slot_pids(dags_folder: Path) -> list[int]:
    """The worker's task processes for this test's DAGs folder (others run pytest too): its
    fork server (``worker.sdk_zygote``) and the slots forked from it, which share its
    command line."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,stat=,args="], capture_output=True,
                         text=True, check=True).stdout
    pids = []
    for line in out.splitlines():
        pid, stat, args = line.strip().split(None, 2)
        if "worker.sdk_zygote" in args and str(dags_folder) in args and not stat.startswith("Z"):
            pids.append(int(pid))
    return pids


SIMPLE_DAG = """
    from datetime import datetime
    from airflow.sdk import dag, task

    @dag(schedule=None, start_date=datetime(2026, 1, 1))
    def simple():
        @task
        def one():
            return 1
        @task
        def two(x):
            return x + 1
        two(one())
    simple()
"""


async def run_simple(cluster: Cluster, timeout: float = RUN_S) -> dict:
    doc = await cluster.wait_run(await trigger(cluster, "simple"), timeout=timeout)
    assert doc["state"] == "success", doc
    assert cluster.by_task(doc)["two"]["return_value"] == 2
    return doc


# ------------------------------------------------------- 1. systemd notify


class NotifySocket:
    """The receiving end of ``$NOTIFY_SOCKET``, as systemd binds it."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.datagrams: list[list[str]] = []
        self.seen = 0

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            self.datagrams.append(data.decode().split("\n"))

    async def wait(self, predicate, what: str, timeout: float = 20.0) -> list[str]:
        """The next datagram (after those already waited past) that matches ``predicate``."""
        async def found():
            self._drain()
            while self.seen < len(self.datagrams):
                lines = self.datagrams[self.seen]
                self.seen += 1
                if predicate(lines):
                    return lines
            return None

        return await wait_for(found, timeout, what)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("daemon", DAEMONS)
async def test_systemd_notify_ready_watchdog_stopping(cluster: Cluster, tmp_path, daemon):
    notify = NotifySocket(tmp_path / "notify.sock")
    cluster.env.pop("WATCHDOG_PID", None)
    try:
        proc = cluster.start(daemon, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000")
        await notify.wait(lambda lines: "READY=1" in lines, f"{daemon} READY=1",
                          timeout=START_S)
        lines = await notify.wait(lambda lines: "WATCHDOG=1" in lines,
                                  f"{daemon} WATCHDOG=1", timeout=5)
        assert any(line.startswith("STATUS=") and len(line) > 7 for line in lines), lines
        # the pings keep coming (every WATCHDOG_USEC / 2), each with a status
        await notify.wait(lambda lines: "WATCHDOG=1" in lines, f"{daemon} 2nd WATCHDOG=1",
                          timeout=5)
        proc.send_signal(signal.SIGTERM)
        await notify.wait(lambda lines: "STOPPING=1" in lines, f"{daemon} STOPPING=1")
        assert await wait_exit(proc) == 0, cluster.log(daemon)[-3000:]
    finally:
        notify.close()


# ----------------------------------------------------------- 2. worker drain


async def test_worker_sigterm_finishes_running_task(cluster: Cluster, tmp_path):
    started = tmp_path / "started"
    cluster.write_dag("drain.py", f"""
        import time
        from datetime import datetime
        from pathlib import Path
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def drain():
            @task
            def two_seconds(ti=None):
                Path({str(started)!r}).write_text("started")
                time.sleep(2)
                return ti.try_number
            two_seconds()
        drain()
    """)
    cluster.start("scheduler")
    worker = cluster.start("worker", SLUICE_WORKER_GRACE_PERIOD_S="10")
    run_id = await trigger(cluster, "drain")

    async def running():
        return started.exists()

    await wait_for(running, START_S, "the task to start")
    worker.send_signal(signal.SIGTERM)
    assert await wait_exit(worker, 20) == 0, cluster.log("worker")[-3000:]
    t = await ti_state(cluster, run_id, "two_seconds")
    assert (t["state"], t["try_number"]) == ("success", 1), t
    doc = await cluster.wait_run(run_id, RUN_S)
    assert doc["state"] == "success"
    assert cluster.by_task(doc)["two_seconds"]["return_value"] == 1
    assert "handing_back_tasks" not in cluster.log("worker")


HAND_BACK_DAG = """
    import time
    from datetime import datetime
    from pathlib import Path
    from airflow.sdk import dag, task

    @dag(schedule=None, start_date=datetime(2026, 1, 1))
    def handback():
        @task
        def long_first_time(ti=None):
            log = Path({executions!r})
            with log.open("a") as fh:
                fh.write(f"{{ti.try_number}}\\n")
            if len(log.read_text().splitlines()) == 1:   # only the first execution hangs
                time.sleep(600)
            return ti.try_number
        long_first_time()
    handback()
"""


async def _hand_back(cluster: Cluster, tmp_path, signal_worker) -> None:
    executions = tmp_path / "executions"
    cluster.write_dag("handback.py", HAND_BACK_DAG.format(executions=str(executions)))
    cluster.start("scheduler")
    worker1 = cluster.start("worker", name="worker1", SLUICE_WORKER_GRACE_PERIOD_S="0.5")
    run_id = await trigger(cluster, "handback")

    async def running():
        return executions.exists()

    await wait_for(running, START_S, "the task to start")
    signal_worker(worker1)
    assert await wait_exit(worker1, 20) == 0, cluster.log("worker1")[-3000:]
    t = await ti_state(cluster, run_id, "long_first_time")
    # handed back: queued again at the same try, not a failed try
    assert (t["state"], t["try_number"], t["worker_id"]) == ("queued", 1, None), t
    assert "handing_back_tasks" in cluster.log("worker1")
    cluster.start("worker", name="worker2")
    doc = await cluster.wait_run(run_id, RUN_S)
    t = cluster.by_task(doc)["long_first_time"]
    assert (doc["state"], t["state"], t["try_number"], t["return_value"]) == \
        ("success", "success", 1, 1)
    assert executions.read_text().split() == ["1", "1"]


async def test_worker_sigterm_hands_back_past_grace(cluster: Cluster, tmp_path):
    await _hand_back(cluster, tmp_path, lambda proc: proc.send_signal(signal.SIGTERM))


async def test_worker_sigterm_to_process_group_still_drains(cluster: Cluster, tmp_path):
    await _hand_back(cluster, tmp_path, lambda proc: os.killpg(proc.pid, signal.SIGTERM))


async def test_standalone_ctrl_c_drains_worker(cluster: Cluster, tmp_path):
    """Ctrl-C on `sluice standalone`: the terminal sends SIGINT to its whole process group."""
    started = tmp_path / "started"
    cluster.write_dag("drain.py", f"""
        import time
        from datetime import datetime
        from pathlib import Path
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def drain():
            @task
            def two_seconds(ti=None):
                Path({str(started)!r}).write_text("started")
                time.sleep(2)
                return ti.try_number
            two_seconds()
        drain()
    """)
    with open(tmp_path / "standalone.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "standalone"], env=cluster.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        run_id = await trigger(cluster, "drain")

        async def running():
            return started.exists()

        await wait_for(running, START_S, "the task to start")
        os.killpg(proc.pid, signal.SIGINT)
        code = await wait_exit(proc, 45)
        text = (tmp_path / "standalone.log").read_text(errors="replace")
        t = await ti_state(cluster, run_id, "two_seconds")
        assert (t["state"], t["try_number"]) == ("success", 1), (t, text[-3000:])
        assert code == 0, text[-3000:]
    finally:
        if proc.poll() is None:  # a stop request first: it stops every daemon it started
            os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


async def test_task_processes_die_with_their_worker(cluster: Cluster, tmp_path):
    executions = tmp_path / "executions"
    cluster.write_dag("handback.py", HAND_BACK_DAG.format(executions=str(executions)))
    cluster.start("scheduler")
    worker = cluster.start("worker")
    await trigger(cluster, "handback")

    async def running():
        return executions.exists()

    await wait_for(running, START_S, "the task to start")
    assert len(slot_pids(cluster.dags_folder)) >= 2, "no fork server and slot found"
    os.kill(worker.pid, signal.SIGKILL)  # the worker alone, as the OOM killer would
    await wait_exit(worker, 10)

    async def slots_gone():
        return not slot_pids(cluster.dags_folder)

    try:
        await wait_for(slots_gone, 10, "the fork server and its slots to die with their worker")
    finally:
        for pid in slot_pids(cluster.dags_folder):
            os.kill(pid, signal.SIGKILL)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def test_programs_a_task_started_die_with_its_worker(cluster: Cluster, tmp_path):
    pid_file = tmp_path / "sleep.pid"
    cluster.write_dag("long_bash.py", f"""
        from datetime import datetime
        from airflow.providers.standard.operators.bash import BashOperator
        from airflow.sdk import DAG

        with DAG("long_bash", schedule=None, start_date=datetime(2026, 1, 1)):
            BashOperator(task_id="sleeper",
                         bash_command="sleep 300 & echo $! > {pid_file}.tmp; "
                                      "mv {pid_file}.tmp {pid_file}; wait")
    """)
    cluster.start("scheduler")
    worker = cluster.start("worker")
    await trigger(cluster, "long_bash")

    async def sleeping():
        return pid_file.exists() and int(pid_file.read_text())

    sleep_pid = await wait_for(sleeping, START_S, "the task's program to start")
    assert process_alive(sleep_pid)
    os.kill(worker.pid, signal.SIGKILL)  # the worker alone, as the OOM killer would
    await wait_exit(worker, 10)

    async def program_gone():
        return not process_alive(sleep_pid)

    try:
        await wait_for(program_gone, 10, "the task's program to die with its worker")
    finally:
        if process_alive(sleep_pid):
            os.kill(sleep_pid, signal.SIGKILL)


async def test_a_task_signalling_its_own_process_group_does_not_kill_its_slot(cluster: Cluster):
    """A program signalling its whole process group (SIGUSR2 here, whose default is to
    terminate) reaches no process of the slot: its try ends as the program says."""
    cluster.write_dag("usr2.py", """
        from datetime import datetime
        from airflow.providers.standard.operators.bash import BashOperator
        from airflow.sdk import DAG

        with DAG("usr2", schedule=None, start_date=datetime(2026, 1, 1)):
            BashOperator(task_id="rotate_logs",
                         bash_command="trap '' USR2; kill -USR2 0; echo survived")
    """)
    cluster.start("scheduler")
    cluster.start("worker")
    doc = await cluster.wait_run(await trigger(cluster, "usr2"), RUN_S)
    task_ = cluster.by_task(doc)["rotate_logs"]
    assert (doc["state"], task_["try_number"], task_["return_value"]) == ("success", 1, "survived")


# -------------------------------------------------- 3. triggerer hands back


async def test_triggerer_sigterm_hands_triggers_back(cluster: Cluster, tmp_path):
    gate = tmp_path / "gate"  # the trigger fires once it exists: after the hand-over
    cluster.write_dag("defer3.py", f"""
        from datetime import datetime
        from airflow.providers.standard.triggers.file import FileTrigger
        from airflow.sdk import DAG, BaseOperator

        class Waiter(BaseOperator):
            def execute(self, context):
                self.defer(trigger=FileTrigger({str(gate)!r}, poke_interval=0.1),
                           method_name="done")

            def done(self, context, event=None):
                return context["ti"].try_number

        with DAG("defer3", schedule=None, start_date=datetime(2026, 1, 1)):
            Waiter(task_id="wait")
    """)
    cluster.start("scheduler")
    cluster.start("worker")
    trig1 = cluster.start("triggerer", name="triggerer1")
    run_id = await trigger(cluster, "defer3")

    async def trigger_owner():
        conn = await cluster.connect()
        try:
            return await conn.fetchrow(
                "SELECT t.id, t.triggerer_id FROM trigger t JOIN task_instance ti"
                " ON ti.trigger_id = t.id AND ti.state = 'deferred'")
        finally:
            await conn.close()

    async def claimed():
        row = await trigger_owner()
        return row if row and row["triggerer_id"] is not None else None

    await wait_for(claimed, START_S, "the trigger to be claimed")
    trig1.send_signal(signal.SIGTERM)
    assert await wait_exit(trig1, 10) == 0, cluster.log("triggerer1")[-3000:]
    row = await trigger_owner()
    assert row is not None and row["triggerer_id"] is None, \
        f"trigger not handed back at shutdown: {row}"
    cluster.start("triggerer", name="triggerer2")
    await wait_for(claimed, START_S, "the trigger to be claimed again")
    gate.touch()
    doc = await cluster.wait_run(run_id, RUN_S)
    t = cluster.by_task(doc)["wait"]
    assert (doc["state"], t["state"], t["try_number"], t["return_value"]) == \
        ("success", "success", 1, 1)


# ------------------------------------------------------------ 4. reconnect


def owned_cluster(tmp_path, *, db_url: str, redis_url: str) -> Cluster:
    dags = tmp_path / "dags"
    dags.mkdir(exist_ok=True)
    return Cluster(tmp_path, db_url=db_url, redis_url=redis_url,
                   prefix=f"t{uuid.uuid4().hex[:10]}", dags_folder=dags)


async def test_redis_restart_daemons_reconnect(tmp_path, db_url, valkey: OwnedValkey):
    cluster = owned_cluster(tmp_path, db_url=db_url, redis_url=valkey.url)
    try:
        cluster.write_dag("simple.py", SIMPLE_DAG)
        cluster.start_all()
        await run_simple(cluster)
        await valkey.stop()

        async def noticed():  # each daemon has lost its connection before Redis returns
            return all("Connection refused" in cluster.log(n) or "Error 111" in cluster.log(n)
                       for n in DAEMONS)

        await wait_for(noticed, 20, "every daemon to notice Redis is gone")
        await valkey.start()
        await run_simple(cluster)
        assert_alive(cluster)
    finally:
        cluster.stop_all()


async def test_redis_flushall_mid_run_is_reconciled(tmp_path, db_url, valkey: OwnedValkey):
    cluster = owned_cluster(tmp_path, db_url=db_url, redis_url=valkey.url)
    try:
        cluster.write_dag("seq.py", """
            import time
            from datetime import datetime
            from airflow.sdk import dag, task

            @dag(schedule=None, start_date=datetime(2026, 1, 1))
            def seq():
                @task
                def step(x):
                    time.sleep(0.3)
                    return x + 1
                v = 0
                for i in range(6):
                    v = step.override(task_id=f"s{i}")(v)
            seq()
        """)
        cluster.start_all()
        run_id = await trigger(cluster, "seq")
        await wait_ti(cluster, run_id, "s1", "success")
        await valkey.flushall()
        doc = await cluster.wait_run(run_id, RUN_S)
        assert doc["state"] == "success", doc
        assert cluster.by_task(doc)["s5"]["return_value"] == 6
        assert all(t["try_number"] == 1 for t in doc["tasks"]), doc["tasks"]
        # and the bus works again for new work
        await valkey.flushall()
        run2 = await trigger(cluster, "seq")
        assert (await cluster.wait_run(run2, RUN_S))["state"] == "success"
        assert_alive(cluster)
    finally:
        cluster.stop_all()


async def test_postgres_restart_between_runs(tmp_path, redis_url, postgres: OwnedPostgres):
    cluster = owned_cluster(tmp_path, db_url=postgres.url, redis_url=redis_url)
    try:
        cluster.write_dag("simple.py", SIMPLE_DAG)
        cluster.start_all()
        await run_simple(cluster)
        offset = len(cluster.log("scheduler"))
        # sessions terminated, new connections refused (57P03) while it shuts down
        async with postgres.shutting_down():
            async def noticed():  # two repair sweeps (1 s apart) failed, as in a real restart
                return cluster.log("scheduler")[offset:].count("repair_connection_error") >= 2 \
                    or any(p.poll() is not None for p in cluster.procs.values())

            await wait_for(noticed, 20, "the outage to be noticed")
        await postgres.start()
        await run_simple(cluster)
        assert_alive(cluster)
    finally:
        cluster.stop_all()


async def test_postgres_down_while_a_task_finishes(tmp_path, redis_url, postgres: OwnedPostgres):
    """The task ends while PostgreSQL is down: its outcome is recorded once PG is back."""
    down = tmp_path / "pg_is_down"
    started = tmp_path / "started"
    returned = tmp_path / "returned"
    cluster = owned_cluster(tmp_path, db_url=postgres.url, redis_url=redis_url)
    try:
        cluster.write_dag("pgdown.py", f"""
            import time
            from datetime import datetime
            from pathlib import Path
            from airflow.sdk import dag, task

            @dag(schedule=None, start_date=datetime(2026, 1, 1))
            def pgdown():
                @task
                def ends_while_pg_down(ti=None):
                    Path({str(started)!r}).touch()
                    while not Path({str(down)!r}).exists():
                        time.sleep(0.05)
                    Path({str(returned)!r}).touch()
                    return ti.try_number
                @task
                def after(x):
                    return x
                after(ends_while_pg_down())
            pgdown()
        """)
        cluster.start_all()
        run_id = await trigger(cluster, "pgdown")

        async def running():
            return started.exists()

        await wait_for(running, START_S, "the task to start")
        await postgres.stop()
        down.touch()

        async def task_returned():
            return returned.exists()

        await wait_for(task_returned, 10, "the task to return")
        offset = len(cluster.log("worker"))

        async def outcome_attempted():
            # the worker records the outcome right after the task returns; two failed
            # heartbeats later (0.5 s apart) that attempt has certainly been made
            worker = cluster.procs["worker"]
            return worker.poll() is not None or \
                cluster.log("worker")[offset:].count("heartbeat_failed") >= 2

        await wait_for(outcome_attempted, 15, "the worker to try to record the outcome")
        await postgres.start()
        doc = await wait_run_alive(cluster, run_id, RUN_S)
        t = cluster.by_task(doc)["ends_while_pg_down"]
        assert (doc["state"], t["state"], t["try_number"], t["return_value"]) == \
            ("success", "success", 1, 1), doc
        assert_alive(cluster)
    finally:
        cluster.stop_all()


async def test_postgres_outage_longer_than_heartbeat_timeout_fails_no_healthy_task(
        tmp_path, redis_url, postgres: OwnedPostgres):
    """No heartbeat reaches PostgreSQL while it is down: that alone makes no zombie.

    The worker daemon is held (SIGSTOP) from before the outage until the
    scheduler has swept with the database back, so that sweep sees a
    heartbeat older than the timeout whatever the timing; then it resumes.
    """
    gate = tmp_path / "gate"
    started = tmp_path / "started"
    cluster = owned_cluster(tmp_path, db_url=postgres.url, redis_url=redis_url)
    events = f"{cluster.env['SLUICE_STREAM_PREFIX']}:events"
    bus = aioredis.from_url(redis_url)
    try:
        cluster.write_dag("outage.py", f"""
            import time
            from datetime import datetime
            from pathlib import Path
            from airflow.sdk import dag, task

            @dag(schedule=None, start_date=datetime(2026, 1, 1))
            def outage():
                @task(retries=0)
                def outlives_the_outage(ti=None):
                    Path({str(started)!r}).touch()
                    while not Path({str(gate)!r}).exists():
                        time.sleep(0.05)
                    return ti.try_number
                outlives_the_outage()
            outage()
        """)
        cluster.start_all()
        run_id = await trigger(cluster, "outage")

        async def running():
            return started.exists()

        await wait_for(running, START_S, "the task to start")
        worker = cluster.procs["worker"]
        os.kill(worker.pid, signal.SIGSTOP)
        await postgres.stop()
        offset = len(cluster.log("scheduler"))

        async def outage_outlasted_heartbeat_timeout():  # 3 s; repair sweeps are 1 s apart
            return cluster.log("scheduler")[offset:].count("repair_connection_error") >= 5

        await wait_for(outage_outlasted_heartbeat_timeout, 30, "a long outage")
        await postgres.start()
        back_ms = int(time.time() * 1000)

        async def swept_with_the_database_back():  # a sweep wakes every active run
            last = await bus.xrevrange(events, count=1)
            return bool(last) and int(last[0][0].decode().split("-")[0]) > back_ms

        await wait_for(swept_with_the_database_back, 30, "a sweep after the outage")
        os.kill(worker.pid, signal.SIGCONT)
        gate.touch()
        doc = await wait_run_alive(cluster, run_id, RUN_S)
        t = cluster.by_task(doc)["outlives_the_outage"]
        assert (doc["state"], t["state"], t["try_number"]) == ("success", "success", 1), doc
        assert "zombie_task_failed" not in cluster.log("scheduler")
        assert_alive(cluster)
    finally:
        await bus.aclose()
        with contextlib.suppress(ProcessLookupError, KeyError):
            os.kill(cluster.procs["worker"].pid, signal.SIGCONT)
        cluster.stop_all()


async def test_postgres_down_when_a_trigger_fires(tmp_path, redis_url, postgres: OwnedPostgres):
    """The event is in hand while PG is down: it is recorded once PG is back."""
    fire = tmp_path / "fire"
    cluster = owned_cluster(tmp_path, db_url=postgres.url, redis_url=redis_url)
    try:
        cluster.write_dag("pgtrig.py", f"""
            import asyncio
            import os
            from datetime import datetime
            from airflow.sdk import DAG, BaseOperator
            from airflow.triggers.base import BaseTrigger, TriggerEvent

            class FileTrigger(BaseTrigger):
                def __init__(self, path):
                    super().__init__()
                    self.path = path

                def serialize(self):
                    return ("pgtrig.FileTrigger", {{"path": self.path}})

                async def run(self):
                    while not os.path.exists(self.path):
                        await asyncio.sleep(0.05)
                    yield TriggerEvent("fired")

            class Waiter(BaseOperator):
                def execute(self, context):
                    self.defer(trigger=FileTrigger({str(fire)!r}), method_name="done")

                def done(self, context, event=None):
                    return event

            with DAG("pgtrig", schedule=None, start_date=datetime(2026, 1, 1)):
                Waiter(task_id="wait")
        """)
        cluster.start_all()
        run_id = await trigger(cluster, "pgtrig")

        async def claimed():
            conn = await cluster.connect()
            try:
                return await conn.fetchval("SELECT triggerer_id FROM trigger")
            finally:
                await conn.close()

        await wait_for(claimed, 20, "the trigger to be running")
        await postgres.stop()
        offset = len(cluster.log("scheduler"))
        fire.touch()

        async def noticed():  # the trigger polls every 50 ms: it fired long before this
            return cluster.log("scheduler")[offset:].count("repair_connection_error") >= 2 \
                or any(p.poll() is not None for p in cluster.procs.values())

        await wait_for(noticed, 20, "the outage to be noticed")
        await postgres.start()
        doc = await wait_run_alive(cluster, run_id, RUN_S)
        t = cluster.by_task(doc)["wait"]
        assert (doc["state"], t["state"], t["try_number"], t["return_value"]) == \
            ("success", "success", 1, "fired"), doc
        assert_alive(cluster)
    finally:
        cluster.stop_all()


# ----------------------------------------------------- 5. password redaction


SECRET = "s3cretpw"


@pytest.mark.parametrize("daemon", DAEMONS)
async def test_database_password_never_logged(cluster: Cluster, daemon):
    # nothing listens on port 1: every attempt is refused and retried with backoff
    cluster.env["SLUICE_DATABASE_URL"] = f"postgresql://u:{SECRET}@127.0.0.1:1/x"
    proc = cluster.start(daemon)

    async def retried():
        return cluster.log(daemon).count("database_unavailable") >= 3

    await wait_for(retried, 20, "three database_unavailable warnings")
    assert proc.poll() is None
    cluster.stop(daemon)
    text = cluster.log(daemon)
    assert SECRET not in text, text[-3000:]


async def test_database_auth_failure_password_never_logged(cluster: Cluster, services):
    from urllib.parse import urlsplit

    admin = urlsplit(services[0])
    cluster.env["SLUICE_DATABASE_URL"] = \
        f"postgresql://nosuchuser_{uuid.uuid4().hex[:6]}:{SECRET}@{admin.hostname}:{admin.port or 5432}/x"
    proc = cluster.start("scheduler")

    async def retried():
        return cluster.log("scheduler").count("database_unavailable") >= 2

    await wait_for(retried, 20, "database_unavailable warnings")
    assert proc.poll() is None
    cluster.stop("scheduler")
    assert SECRET not in cluster.log("scheduler")


@pytest.mark.parametrize("daemon", DAEMONS)
async def test_redis_password_never_logged(cluster: Cluster, daemon):
    cluster.env["SLUICE_REDIS_URL"] = f"redis://:{SECRET}@127.0.0.1:1/0"
    proc = cluster.start(daemon)

    async def retried():
        return cluster.log(daemon).count("redis_unavailable") >= 3

    await wait_for(retried, 20, "three redis_unavailable warnings")
    assert proc.poll() is None
    cluster.stop(daemon)
    text = cluster.log(daemon)
    assert SECRET not in text, text[-3000:]


# ---------------------------------------------------------- 6. bad input


BAD_ENTRIES = [
    {"m": "not json"},
    {"m": json.dumps({"v": 1, "kind": "no_such_kind"})},
    {"m": json.dumps({"v": 1, "kind": "run_task", "ti_id": "one"})},
    {"x": "no m field"},
]


async def test_malformed_stream_messages_are_dead_lettered(cluster: Cluster, stream_prefix):
    cluster.write_dag("simple.py", SIMPLE_DAG)
    cluster.start_all()
    redis = aioredis.from_url(cluster.env["SLUICE_REDIS_URL"])
    streams = [f"{stream_prefix}:queue:default", f"{stream_prefix}:events",
               f"{stream_prefix}:triggers"]
    deadletter = f"{stream_prefix}:deadletter"
    try:
        async def groups_exist():
            for stream in streams:
                try:
                    if not await redis.xinfo_groups(stream):
                        return False
                except Exception:  # noqa: BLE001 - stream not created yet
                    return False
            return True

        await wait_for(groups_exist, 20, "every daemon's consumer group")
        for stream in streams:
            for fields in BAD_ENTRIES:
                await redis.xadd(stream, fields)
        # well-formed but about nothing: ignored, not dead-lettered
        await redis.xadd(streams[0], {"m": json.dumps({"v": 1, "kind": "run_task",
                                                        "ti_id": 10**12, "try_number": 1})})
        await redis.xadd(streams[1], {"m": json.dumps({"v": 1, "kind": "run_changed",
                                                        "run_pk": 10**12})})
        expected = len(streams) * len(BAD_ENTRIES)

        async def dead_lettered():
            return await redis.xlen(deadletter) >= expected

        await wait_for(dead_lettered, 20, f"{expected} dead-lettered entries")
        entries = await redis.xrange(deadletter)
        assert len(entries) == expected
        by_source: dict[str, int] = {}
        for _, fields in entries:
            by_source[fields[b"source"].decode()] = by_source.get(fields[b"source"].decode(), 0) + 1
            assert fields[b"error"]
        assert by_source == {s: len(BAD_ENTRIES) for s in streams}
        async def nothing_pending():  # every entry, good or bad, is acked
            for stream in streams:
                group = (await redis.xinfo_groups(stream))[0]["name"]
                if (await redis.xpending(stream, group))["pending"]:
                    return False
            return True

        await wait_for(nothing_pending, 10, "every entry to be acked")
        assert_alive(cluster)
        await run_simple(cluster)
        assert_alive(cluster)
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
async def plain(services, template_db, tmp_path_factory):
    """The three daemons on a database of the module's own, for the tests that only run DAGs
    (each its own) and check every daemon outlives them."""
    async with own_cluster(services, template_db, tmp_path_factory.mktemp("ops"), name="ops",
                           own_airflow_home=False) as cluster:
        cluster.write_dag("simple.py", SIMPLE_DAG)
        cluster.start_all()
        yield cluster


async def test_bad_return_values_fail_only_their_try(plain: Cluster):
    cluster = plain
    cluster.write_dag("badvalues.py", """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def badvalues():
            @task
            def not_json():
                return object()
            @task
            def too_big():
                return "x" * (2 * 1024 * 1024)
            @task
            def fine():
                return "fine"
            not_json()
            too_big()
            fine()
        badvalues()
    """)
    run_id = await trigger(cluster, "badvalues")
    doc = await cluster.wait_run(run_id, RUN_S)
    tasks = cluster.by_task(doc)
    assert doc["state"] == "failed"
    assert {k: (v["state"], v["try_number"]) for k, v in tasks.items()} == {
        "not_json": ("failed", 1), "too_big": ("failed", 1), "fine": ("success", 1)}
    not_json = await ti_state(cluster, run_id, "not_json")
    too_big = await ti_state(cluster, run_id, "too_big")
    # the Task SDK's serde refuses the value in the task process
    assert "TypeError: Cannot serialize object of type <class 'object'>" in not_json["error"], \
        not_json["error"]
    # the Execution API refuses the push, naming the limit's setting (SLUICE_MAX_XCOM_BYTES)
    assert "bytes exceeds" in too_big["error"], too_big["error"]
    assert "max_xcom_bytes" in too_big["error"].lower(), too_big["error"]
    assert tasks["too_big"]["return_value"] is None
    assert_alive(cluster)


async def test_nan_return_value_fails_only_its_try(plain: Cluster):
    cluster = plain
    cluster.write_dag("nan.py", """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def nan():
            @task
            def not_a_number():
                return float("nan")
            not_a_number()
        nan()
    """)
    run_id = await trigger(cluster, "nan")
    doc = await cluster.wait_run(run_id, RUN_S)
    t = cluster.by_task(doc)["not_a_number"]
    assert (doc["state"], t["state"]) == ("failed", "failed")
    # the Task SDK's client refuses to send NaN as JSON
    error = (await ti_state(cluster, run_id, "not_a_number"))["error"]
    assert "Out of range float values are not JSON compliant" in error, error
    assert_alive(cluster)
    await run_simple(cluster)


async def test_unstorable_outcome_fails_only_its_try(plain: Cluster):
    """PostgreSQL refuses the outcome itself (a NUL byte in text): the try fails, the worker lives."""
    cluster = plain
    cluster.write_dag("nul.py", """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def nul():
            @task(retries=0)
            def nul_in_error():
                raise ValueError("a NUL byte \\x00 in the message")
            nul_in_error()
        nul()
    """)
    run_id = await trigger(cluster, "nul")
    doc = await cluster.wait_run(run_id, RUN_S)
    assert (doc["state"], cluster.by_task(doc)["nul_in_error"]["state"]) == ("failed", "failed")
    error = (await ti_state(cluster, run_id, "nul_in_error"))["error"]
    assert error and "the outcome of this try could not be stored" in error, error
    assert_alive(cluster)
    await run_simple(cluster)


# ---------------------------------------------------- 7. two schedulers


async def test_two_schedulers_never_double_queue(cluster: Cluster):
    cluster.write_dag("wide.py", """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1), max_active_runs=4)
        def wide():
            @task
            def leaf(i):
                return i
            @task
            def fan_in(values):
                return sum(values)
            fan_in([leaf.override(task_id=f"leaf_{i:02d}")(i) for i in range(30)])
        wide()
    """)
    cluster.start("scheduler", name="scheduler1")
    cluster.start("scheduler", name="scheduler2")
    cluster.start("worker", SLUICE_WORKER_CONCURRENCY="8")
    run_ids = [await trigger(cluster, "wide") for _ in range(3)]
    for run_id in run_ids:
        doc = await cluster.wait_run(run_id, RUN_S)
        assert doc["state"] == "success", doc
        assert len(doc["tasks"]) == 31
        assert cluster.by_task(doc)["fan_in"]["return_value"] == sum(range(30))
        tries = {t["task_id"]: t["try_number"] for t in doc["tasks"]}
        assert set(tries.values()) == {1}, tries
    assert "task_result_discarded" not in cluster.log("worker")
    assert_alive(cluster, "scheduler1", "scheduler2", "worker")


# ---------------------------------------------------- 8. queue routing


async def test_queue_routing(cluster: Cluster):
    cluster.write_dag("routing.py", """
        from datetime import datetime
        from pathlib import Path
        from airflow.sdk import dag, task

        def worker_pid():  # the worker daemon this try runs under: `python -m worker` above
            pid = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[1])
            while pid > 1:
                if Path(f"/proc/{pid}/cmdline").read_bytes().endswith(b"-m\\0worker\\0"):
                    return pid
                pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
            return None

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def routing():
            @task(queue="gpu")
            def on_gpu():
                return worker_pid()
            @task
            def on_default():
                return worker_pid()
            on_gpu()
            on_default()
        routing()
    """)
    cluster.start("scheduler")
    default = cluster.start("worker", name="worker_default")
    run_id = await trigger(cluster, "routing")
    await wait_ti(cluster, run_id, "on_default", "success", RUN_S)
    # nobody serves "gpu" yet: it waits in its queue
    assert (await ti_state(cluster, run_id, "on_gpu"))["state"] == "queued"
    gpu = cluster.start("worker", name="worker_gpu", SLUICE_WORKER_QUEUES="gpu")
    doc = await cluster.wait_run(run_id, RUN_S)
    tasks = cluster.by_task(doc)
    assert doc["state"] == "success"
    assert tasks["on_gpu"]["return_value"] == gpu.pid
    assert tasks["on_default"]["return_value"] == default.pid
