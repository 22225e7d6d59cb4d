"""Fault injection: one wide run survives killed daemons, a flushed bus and a database restart.

The DAG is N independent tasks plus a fan-in. Every tenth task also defers
once (so the triggerer holds work when it is killed) and task t0000 is a
sentinel that holds its slot until the test releases it (so a task ends while
PostgreSQL is down). Each task execution inserts a row into ``executions``
(task_id, try_number, the Task SDK slot's pid, the pid of the worker it runs
under) before doing its work. While the
run is in progress the plan below is applied, each step once a further share
of the tasks has succeeded:

    SIGKILL the worker (alone, as the OOM killer would) while it runs tasks, and
    start a new one; restart the scheduler (SIGTERM, then start); SIGKILL the
    triggerer and start a new one; FLUSHALL Redis while the daemons run, with no
    daemon restarted (every PID the same until more tasks have succeeded after
    it); SIGKILL the worker again;
    restart PostgreSQL (sessions terminated, new connections refused with 57P03
    for two repair sweeps, then no server for two more, then back on the same
    port), releasing the sentinel task at the start of the outage.

Redis and PostgreSQL are private to the test (tests/faults/__init__.py); Redis
is Redis's own server when installed, whose blocked reads end with UNBLOCKED
when FLUSHALL deletes their stream.
Afterwards: the run succeeded; every task instance is ``success``; no try ran
twice; every execution beyond one per task belongs to an earlier try that was
not on a surviving worker, and there are no more of them than task instances
that were running on killed workers; no daemon, no slot and no slot fork server
(``worker.sdk_zygote``) is left.

``SLUICE_FAULTS_SIZE`` sets N for the default suite (60); the variant marked
``faults`` runs N=1000 (``make faults``). Both run the whole plan.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid

import asyncpg
import pytest

from tests.cluster import Cluster, wait_for
from tests.faults import OwnedPostgres, OwnedValkey

SMALL = int(os.environ.get("SLUICE_FAULTS_SIZE", "60"))
FULL = 1000
DEFER_EVERY = 10

DAG_SOURCE = '''
import asyncio
import os
import time
from datetime import datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import DAG, BaseOperator

N = {n}
WORK_S = {work_s}
DEFER_EVERY = {defer_every}


def worker_pid():
    """The worker this try runs under: the parent of the slot's fork server."""
    with open(f"/proc/{{os.getppid()}}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def record(ti):
    """One row per execution of a task body; rides out a database restart."""
    import asyncpg

    worker = worker_pid()

    async def insert():
        delay = 0.05
        for _ in range(300):
            try:
                conn = await asyncpg.connect(os.environ["FAULTS_DB"], timeout=5)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            try:
                await conn.execute(
                    "INSERT INTO executions (task_id, try_number, pid, worker_pid)"
                    " VALUES ($1, $2, $3, $4)",
                    ti.task_id, ti.try_number, os.getpid(), worker)
                return
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                    asyncpg.exceptions.OperatorInterventionError):
                await asyncio.sleep(delay)
            finally:
                try:
                    await conn.close()
                except Exception:
                    pass
        raise RuntimeError("could not record the execution")

    asyncio.run(insert())


class Work(BaseOperator):
    def execute(self, context):
        record(context["ti"])
        time.sleep(WORK_S)
        return context["ti"].try_number


class Sentinel(Work):
    """Holds its slot until the test releases it: ends right inside the database outage."""

    def execute(self, context):
        record(context["ti"])
        release = os.environ["FAULTS_RELEASE"]
        deadline = time.monotonic() + 600
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.05)
        return context["ti"].try_number


class DeferringWork(Work):
    def execute(self, context):
        record(context["ti"])
        time.sleep(WORK_S)
        self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=1)), method_name="resume")

    def resume(self, context, event=None):
        return context["ti"].try_number


with DAG("faults", schedule=None, start_date=datetime(2026, 1, 1), max_active_tasks=100000):
    tasks = [
        (Sentinel if i == 0 else DeferringWork if i % DEFER_EVERY == DEFER_EVERY - 1 else Work)(
            task_id=f"t{{i:04d}}", retries=4, retry_delay=timedelta(0))
        for i in range(N)
    ]
    tasks >> EmptyOperator(task_id="fan_in")
'''


def _ps() -> list[tuple[int, int, str, str]]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,stat=,args="], capture_output=True,
                         text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        pid, ppid, stat, args = line.strip().split(None, 3)
        rows.append((int(pid), int(ppid), stat, args))
    return rows


def slot_processes(dags_folder) -> dict[int, int]:
    """pid: ppid of this test's live slot fork servers and the slots they forked (slots keep
    the server's command line; other tests run pytest too)."""
    return {pid: ppid for pid, ppid, stat, args in _ps()
            if "worker.sdk_zygote" in args and str(dags_folder) in args and not stat.startswith("Z")}


def orphans(dags_folder, live_workers: set[int]) -> list[int]:
    """Fork servers and slots not under a live worker (a server's parent is its worker)."""
    procs = slot_processes(dags_folder)
    servers = {pid for pid, ppid in procs.items() if ppid in live_workers}
    return [pid for pid, ppid in procs.items() if pid not in servers and ppid not in servers]


class FaultRun:
    def __init__(self, cluster: Cluster, pg: OwnedPostgres, valkey: OwnedValkey, size: int,
                 skip: tuple[str, ...] = ()):
        self.skip = skip
        self.release = cluster.root / "release"
        self.cluster = cluster
        self.pg = pg
        self.valkey = valkey
        self.size = size
        self.killed_workers: dict[int, int] = {}  # pid -> instances running on it when killed
        self.worker_n = 1
        self.applied: list[str] = []
        self.hostname = socket.gethostname()
        self.run_id = ""

    @property
    def worker_name(self) -> str:
        return f"worker{self.worker_n}"

    async def q(self, sql: str, *args):
        conn = await asyncpg.connect(self.pg.url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    async def progress(self, run_id: str) -> tuple[str, int]:
        rows = await self.q(
            "SELECT r.state, count(ti.id) FILTER (WHERE ti.state = 'success' AND ti.task_id <>"
            " 'fan_in') AS done FROM dag_run r LEFT JOIN task_instance ti ON ti.run_pk = r.id"
            " WHERE r.run_id = $1 GROUP BY r.state", run_id)
        return (rows[0]["state"], rows[0]["done"]) if rows else ("absent", 0)

    def check_alive(self) -> None:
        for name, proc in self.cluster.procs.items():
            if proc.pid in self.killed_workers:
                continue
            code = proc.poll()
            assert code is None, \
                f"{name} died by itself ({code}) after {self.applied}:\n{self.cluster.log(name)[-4000:]}"

    async def wait_finished(self, run_id: str, timeout: float) -> dict:
        async def finished():
            self.check_alive()
            state, _ = await self.progress(run_id)
            return state in ("success", "failed")

        await wait_for(finished, timeout, f"run {run_id} to finish (after {self.applied})")
        return await self.cluster.run_doc(run_id)

    # --- the faults -----------------------------------------------------------
    async def kill_worker(self) -> None:
        proc = self.cluster.procs[self.worker_name]
        worker_id = f"{self.hostname}:{proc.pid}"

        async def busy():  # kill it while it holds work, or the fault proves little
            self.check_alive()
            rows = await self.q("SELECT count(*) AS n FROM task_instance WHERE state = 'running'"
                                " AND worker_id = $1", worker_id)
            return rows[0]["n"] > 0

        await wait_for(busy, 30, f"{self.worker_name} to be running tasks")
        os.kill(proc.pid, signal.SIGKILL)  # the worker alone: its slots die with it
        proc.wait(10)
        rows = await self.q("SELECT count(*) AS n FROM task_instance WHERE state = 'running'"
                            " AND worker_id = $1", worker_id)
        self.killed_workers[proc.pid] = rows[0]["n"]
        self.worker_n += 1
        self.cluster.start("worker", name=self.worker_name)

    async def restart_scheduler(self) -> None:
        assert self.cluster.stop("scheduler") == 0, self.cluster.log("scheduler")[-4000:]
        self.cluster.start("scheduler")

    async def kill_triggerer(self) -> None:
        self.cluster.signal("triggerer", signal.SIGKILL)
        self.cluster.procs.pop("triggerer").wait(10)
        self.cluster.start("triggerer")

    async def flush_redis(self) -> None:
        """FLUSHALL with every daemon running; they recreate the bus and go on, as they are."""
        pids = self.pids()

        async def blocked():  # scheduler and triggerer at least (a busy worker reads nothing)
            self.check_alive()
            clients = await self.valkey.command("CLIENT", "LIST")
            text = clients.decode() if isinstance(clients, bytes) else str(clients)
            return sum(1 for line in text.splitlines()
                       if "cmd=xreadgroup" in line and "flags=b" in line) >= 2

        await wait_for(blocked, 30, "the daemons to block in XREADGROUP")
        _, done_before = await self.progress(self.run_id)
        await self.valkey.flushall()
        more = max(20, self.size // 20)

        async def progressed():
            self.check_alive()
            state, done = await self.progress(self.run_id)
            return state == "success" or done >= min(self.size - 1, done_before + more)

        await wait_for(progressed, 120, f"{more} more tasks to succeed after FLUSHALL")
        assert self.pids() == pids, f"daemons restarted across FLUSHALL: {pids} -> {self.pids()}"

    def pids(self) -> dict[str, int | None]:
        """Each daemon's PID, None once it has exited."""
        return {name: proc.pid if proc.poll() is None else None
                for name, proc in self.cluster.procs.items()}

    async def restart_postgres(self) -> None:
        """Down long enough to be noticed (two failed repair sweeps), as a real restart is."""
        async def sentinel_mid_task():
            self.check_alive()
            rows = await self.q(
                "SELECT count(*) AS n FROM task_instance ti JOIN executions e"
                " ON e.task_id = ti.task_id AND e.try_number = ti.try_number"
                " WHERE ti.task_id = 't0000' AND ti.state = 'running'")
            return rows[0]["n"] > 0

        await wait_for(sentinel_mid_task, 30, "the sentinel task to be running")
        offset = len(self.cluster.log("scheduler"))
        # sessions terminated, then connections refused: first 57P03 ("shutting down")
        # for a while, then no server at all
        async with self.pg.shutting_down():
            self.release.touch()  # the sentinel task ends now, with the database refusing

            async def noticed():
                return self.cluster.log("scheduler")[offset:].count("repair_connection_error") >= 2

            await wait_for(noticed, 20, "the scheduler to notice PostgreSQL is refusing")
        try:
            offset = len(self.cluster.log("scheduler"))
            await wait_for(noticed, 20, "the scheduler to notice PostgreSQL is gone")
        finally:
            await self.pg.start()

    def plan(self):
        steps = [("SIGKILL worker", self.kill_worker),
                 ("restart scheduler", self.restart_scheduler),
                 ("SIGKILL triggerer", self.kill_triggerer),
                 ("FLUSHALL redis", self.flush_redis),
                 ("SIGKILL worker again", self.kill_worker),
                 ("restart postgres", self.restart_postgres)]
        return [(name, fault) for name, fault in steps if name not in self.skip]

    async def run(self, run_id: str, timeout: float) -> None:
        self.run_id = run_id
        plan = self.plan()
        deadline = time.monotonic() + timeout
        for step, (name, fault) in enumerate(plan, start=1):
            threshold = self.size * step // (len(plan) + 1)

            async def reached(threshold=threshold, name=name):
                self.check_alive()
                state, done = await self.progress(run_id)
                assert state in ("queued", "running"), \
                    f"run {state} with {done}/{self.size} done before '{name}' (after {self.applied})"
                return done >= threshold

            await wait_for(reached, max(1.0, deadline - time.monotonic()),
                           f"{threshold}/{self.size} tasks done before '{name}'")
            await fault()
            self.applied.append(name)
        self.release.touch()


async def _fault_run(tmp_path, pg: OwnedPostgres, valkey: OwnedValkey, size: int,
                     skip: tuple[str, ...] = (), report=print) -> None:
    work_s = float(os.environ.get("SLUICE_FAULTS_TASK_S", "0.5" if size <= 100 else "0.2"))
    concurrency = os.environ.get("SLUICE_FAULTS_CONCURRENCY", "8" if size <= 100 else "16")
    timeout = 120 + size * 0.5
    conn = await asyncpg.connect(pg.url)
    try:
        await conn.execute("CREATE TABLE executions (id bigserial PRIMARY KEY, task_id text NOT NULL,"
                           " try_number int NOT NULL, pid int NOT NULL, worker_pid int NOT NULL,"
                           " at timestamptz NOT NULL DEFAULT clock_timestamp())")
    finally:
        await conn.close()
    dags = tmp_path / "dags"
    dags.mkdir()
    cluster = Cluster(tmp_path, db_url=pg.url, redis_url=valkey.url,
                      prefix=f"f{uuid.uuid4().hex[:10]}", dags_folder=dags)
    # not SLUICE_*: a task never sees Sluice's settings (shared.daemon.task_environment)
    cluster.env.update(FAULTS_DB=pg.url, SLUICE_WORKER_CONCURRENCY=concurrency,
                       FAULTS_RELEASE=str(tmp_path / "release"))
    faults = FaultRun(cluster, pg, valkey, size, skip)
    try:
        cluster.write_dag("faults.py", DAG_SOURCE.format(n=size, work_s=work_s,
                                                         defer_every=DEFER_EVERY))
        cluster.start("scheduler")
        cluster.start("triggerer")
        cluster.start("worker", name=faults.worker_name)
        await cluster.wait_dag("faults", timeout=120)  # the scheduler imports Airflow first
        started = time.monotonic()
        run_id = await cluster.trigger("faults")
        await faults.run(run_id, timeout)
        doc = await faults.wait_finished(run_id, max(30.0, timeout - (time.monotonic() - started)))
        elapsed = time.monotonic() - started
        faults.check_alive()
        live_workers = {p.pid for n, p in cluster.procs.items()
                        if n.startswith("worker") and p.poll() is None}

        # a killed worker's fork server and slots die with it
        async def no_orphans():
            return not orphans(dags, live_workers)

        await wait_for(no_orphans, 30, "slots of killed workers to exit")
    finally:
        cluster.stop_all()
    procs_left = [n for n, p in cluster.procs.items() if p.poll() is None]
    assert not procs_left, procs_left

    async def no_slots():
        return not slot_processes(dags)

    await wait_for(no_slots, 30, "every slot and fork server to exit")

    # --- the outcome -----------------------------------------------------------
    assert doc["state"] == "success", [t for t in doc["tasks"] if t["state"] != "success"][:5]
    tis = {t["task_id"]: t for t in doc["tasks"]}
    assert len(tis) == size + 1
    not_success = {k: v["state"] for k, v in tis.items() if v["state"] != "success"}
    assert not not_success, not_success

    conn = await asyncpg.connect(pg.url)
    try:
        rows = await conn.fetch("SELECT task_id, try_number, pid, worker_pid FROM executions"
                                " ORDER BY id")
    finally:
        await conn.close()
    by_task: dict[str, list] = {}
    for row in rows:
        by_task.setdefault(row["task_id"], []).append(row)
    work = sorted(k for k in tis if k != "fan_in")
    assert sorted(by_task) == work, "every task ran, and nothing else"

    killed_running = sum(faults.killed_workers.values())
    extra = len(rows) - size
    report(f"\nfaults size={size}: run took {elapsed:.1f}s; plan {faults.applied}; "
           f"{len(rows)} executions, {extra} beyond one per task; instances running on killed "
           f"workers: {faults.killed_workers}")
    for task_id, runs in by_task.items():
        final_try = tis[task_id]["try_number"]
        tries = [r["try_number"] for r in runs]
        assert len(tries) == len(set(tries)), f"{task_id}: a try executed twice: {tries}"
        assert final_try in tries, f"{task_id}: the successful try {final_try} never ran: {tries}"
        assert max(tries) == final_try, f"{task_id}: ran past its final try: {tries}"
        for r in runs:
            if r["try_number"] != final_try:
                # an earlier try may only have been lost with a killed worker: never on a
                # worker that lived
                assert r["worker_pid"] not in live_workers, \
                    f"{task_id} try {r['try_number']} failed on a healthy worker {r['worker_pid']}"
    assert extra <= killed_running, \
        f"{extra} extra executions, but only {killed_running} instances ran on killed workers"
    assert faults.applied == [name for name, _ in faults.plan()]


@pytest.mark.parametrize("size", [
    pytest.param(SMALL, id=f"default-n{SMALL}", marks=pytest.mark.timeout(300)),
    pytest.param(FULL, id=f"full-n{FULL}", marks=[pytest.mark.faults, pytest.mark.timeout(1800)]),
])
async def test_fault_plan_during_wide_run(tmp_path, postgres, strict_redis, size, capsys):
    def report(line: str) -> None:  # shown even when pytest captures output
        with capsys.disabled():
            print(line)

    await _fault_run(tmp_path, postgres, strict_redis, size, report=report)
