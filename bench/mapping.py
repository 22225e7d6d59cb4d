"""Dynamic task mapping: ``total(noop.expand(x=gen()))`` end to end, and its expansion.

The scenario
    ``gen`` (a ``@task``) returns ``list(range(--instances))`` (default 1,000),
    ``noop`` is a no-op ``@task`` returning its ``x``, expanded over that list,
    and ``total`` sums the lazy sequence of the results (the benchmark
    checks the sum). The DAG is triggered ``--runs`` (default 3) times, one run
    after the other, against real scheduler, triggerer and ``--workers``
    (default 1) worker processes with the product's defaults plus
    ``SLUICE_MAX_MAP_LENGTH`` = the instance count (and
    ``SLUICE_WORKER_CONCURRENCY`` when ``--concurrency`` is given). The DAG
    keeps ``@dag``'s default ``max_active_tasks`` (16) unless
    ``--max-active-tasks`` says otherwise: it caps the instances queued or
    running at once, whatever the workers could take.

What is measured (database timestamps unless said otherwise; one machine, one clock)
    run        ``dag_run.end_date - start_date``; instances per second = instances / run.
               Both are PostgreSQL ``now()`` of the scheduler's transactions, i.e. the
               start of the pass that started the run and of the pass that finished it.
    queue lag  per ``noop`` instance, ``start_date - queued_at`` (the worker's claim
               minus the start of the scheduler transaction that queued it), p50/p99.
    passes     distinct ``queued_at`` among the ``noop`` instances: the scheduler
               transactions that queued at least one of them.
    expansion, in the daemons
               ``gen done -> pass``: ``gen``'s ``end_date`` to the first ``noop``'s
               ``queued_at`` (the start of the scheduler transaction that expands,
               decides and queues: expansion and the first queueing share it).
               ``pass -> expanded``: that transaction's start to the scheduler's
               ``task_expanded`` log line (written right after ``expand_placeholders``
               returns, uncommitted): locking the run, reading its instances, deciding,
               reading the task map, and the expansion statement itself.
               ``expanded -> first start``: that line to the first ``noop``'s
               ``start_date`` (re-reading the instances, deciding again, queueing,
               the commit, the queue message, the worker's claim).
    expansion, the statement alone
               before the daemons start, in the benchmark's fresh database: one
               placeholder row (``map_index -1``) of a run, then ``expand_placeholders``
               of ``shared/db/queries.sql`` with length = the instance count, timed
               by this process around ``execute`` (``statement``) and the ``COMMIT``
               after it (``commit``), ``--sql-reps`` (default 5) times, each on a new run.
    CPU        user + system seconds from trigger to the run's end (``/proc``): each daemon
               with its children (a worker's fork server and slot processes), the worker's own
               process alone (its event loop: claims, finishes, and in the Task SDK runtime
               the Execution API it serves), the PostgreSQL backends of the benchmark's
               database alive at the end (the server is local), and the whole machine
               (``/proc/stat``, every process on it, both CPUs); per task = / (instances + 2).
    RSS        ``VmRSS`` of each daemon and of its live children after the last run.

The DAG file imports ``dag`` and ``task`` from ``airflow.sdk``: tries run with Airflow's
Task SDK.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import asyncpg

from bench.common import (
    add_output_args,
    bench_cluster,
    daemon_rss,
    load_average,
    log_events,
    machine,
    own_cpu_s,
    percentile,
    render_rss,
    run_scenario,
    settings_used,
    task_sdk,
    wait_ready,
)
from bench.triggers import cpu_s, machine_busy_s
from shared.db import q
from tests.cluster import Cluster

DAG_ID = "bench_mapping"
# end to end on this 2-core machine, by instance count: the Task SDK runtime's 1,000-way no-op
# (the issue that made it the only runtime) and the legacy runtime's 10,000 (issue 3)
TARGETS_S = {1_000: 3.0, 10_000: 5.0}
POLL_S = 0.1

DAG_SOURCE = '''
"""Benchmark: total(noop.expand(x=gen())) over {n} elements."""
from datetime import datetime

from {sdk} import dag, task


@task
def gen():
    return list(range({n}))


@task
def noop(x):
    return x


@task
def total(xs):
    return sum(xs)


@dag(dag_id="{dag_id}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     max_active_tasks={max_active_tasks})
def {dag_id}():
    total(noop.expand(x=gen()))


{dag_id}()
'''

RUN_SQL = "SELECT id, state, created_at, start_date, end_date FROM dag_run WHERE run_id = $1"
TIS_SQL = """
SELECT task_id, map_index, state, queued_at, start_date, end_date
  FROM task_instance WHERE run_pk = $1 ORDER BY task_id, map_index
"""
TOTAL_SQL = """
SELECT value FROM xcom
 WHERE run_pk = $1 AND task_id = 'total' AND map_index = -1 AND key = 'return_value'
"""


# --- the expansion statement alone -----------------------------------------------------

async def time_expand_sql(cluster: Cluster, n: int, reps: int) -> list[dict[str, float]]:
    """Milliseconds of ``expand_placeholders`` (placeholder -> 0..n-1) and its commit."""
    conn = await cluster.connect()
    try:
        await conn.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized, is_active)"
                           " VALUES ('bench_sql', 'none', 'none', '{}', false)")
        timings = []
        for rep in range(reps):
            run_pk = await conn.fetchval(
                "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state)"
                " VALUES ('bench_sql', $1, 'manual', now(), 'success') RETURNING id",
                f"sql_{rep}")
            ti_id = await conn.fetchval("INSERT INTO task_instance (run_pk, task_id) VALUES ($1, 'noop')"
                                        " RETURNING id", run_pk)
            timings.append(await _one_expansion(conn, ti_id, n))
        return timings
    finally:
        await conn.close()


async def _one_expansion(conn: asyncpg.Connection, ti_id: int, n: int) -> dict[str, float]:
    tx = conn.transaction()
    await tx.start()
    t0 = time.perf_counter()
    status = await conn.execute(q("expand_placeholders"), [ti_id], [n])
    t1 = time.perf_counter()
    await tx.commit()
    t2 = time.perf_counter()
    if status != f"INSERT 0 {n - 1}":
        raise RuntimeError(f"expand_placeholders returned {status!r}, expected {n - 1} rows")
    return {"statement": (t1 - t0) * 1000, "commit": (t2 - t1) * 1000}


# --- one run of the DAG ------------------------------------------------------------------

def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process, its reaped children and, recursively, its live ones."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # gone meanwhile
        return 0.0
    own = sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return own + sum(tree_cpu_s(int(child)) for child in children)


async def backend_cpu_s(conn: asyncpg.Connection) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend of the benchmark's database (a local server)."""
    pids = await conn.fetch("SELECT pid FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    return {r["pid"]: cpu_s(r["pid"]) for r in pids if Path(f"/proc/{r['pid']}/stat").exists()}


async def cpu_snapshot(cluster: Cluster, conn: asyncpg.Connection) -> dict:
    busy, _total = machine_busy_s()
    return {"machine": busy, "postgres": await backend_cpu_s(conn),
            **{name: tree_cpu_s(proc.pid) for name, proc in cluster.procs.items()},
            **{f"{name} own": own_cpu_s(proc.pid) for name, proc in cluster.procs.items()
               if name.startswith("worker")}}


def cpu_used(before: dict, after: dict) -> dict[str, float]:
    """Per process tree; PostgreSQL: backends alive at the end (a closed one's share is lost)."""
    used = {k: after[k] - before[k] for k in before if k != "postgres"}
    used["postgres"] = sum(v - before["postgres"].get(pid, 0.0) for pid, v in after["postgres"].items())
    return used


async def wait_finished(conn: asyncpg.Connection, run_id: str, timeout_s: float) -> None:
    """Poll only the run's state: a full run document of every instance would add load."""
    with anyio.fail_after(timeout_s):
        while await conn.fetchval("SELECT state FROM dag_run WHERE run_id = $1",
                                  run_id) not in ("success", "failed"):
            await anyio.sleep(POLL_S)


async def one_run(cluster: Cluster, args: argparse.Namespace) -> dict:
    await cluster.wait_dag(DAG_ID)
    conn = await cluster.connect()
    try:
        before = await cpu_snapshot(cluster, conn)
        run_id = await cluster.trigger(DAG_ID)
        await wait_finished(conn, run_id, args.timeout)
        after = await cpu_snapshot(cluster, conn)
        run = await conn.fetchrow(RUN_SQL, run_id)
        tis = await conn.fetch(TIS_SQL, run["id"])
        summed = await conn.fetchval(TOTAL_SQL, run["id"])
    finally:
        await conn.close()
    if run["state"] != "success" or summed != sum(range(args.instances)):
        raise RuntimeError(f"run {run_id} ended {run['state']}, total {summed!r}")
    expanded = [e for e in log_events(cluster, "scheduler", "task_expanded")
                if e.get("length") == args.instances]
    result = figures(run, tis, expanded[-1]["ts"], args.instances)
    result["cpu"] = cpu_used(before, after)
    return result


def figures(run, tis: list, expanded_at: datetime, n: int) -> dict:
    gen = next(t for t in tis if t["task_id"] == "gen")
    total = next(t for t in tis if t["task_id"] == "total")
    noop = [t for t in tis if t["task_id"] == "noop"]
    if len(noop) != n or any(t["state"] != "success" for t in noop):
        raise RuntimeError(f"expected {n} successful noop instances, found {len(noop)}")
    s = lambda a, b: (b - a).total_seconds()  # noqa: E731
    first_queued = min(t["queued_at"] for t in noop)
    duration = s(run["start_date"], run["end_date"])
    return {
        "duration_s": duration, "rate": n / duration,
        "queue_lag_ms": [s(t["queued_at"], t["start_date"]) * 1000 for t in noop],
        "task_ms": statistics.median(s(t["start_date"], t["end_date"]) * 1000 for t in noop),
        "passes": len({t["queued_at"] for t in noop}),
        "gen_to_pass_ms": s(gen["end_date"], first_queued) * 1000,
        "pass_to_expanded_ms": s(first_queued, expanded_at) * 1000,
        "expanded_to_start_ms": s(expanded_at, min(t["start_date"] for t in noop)) * 1000,
        "run_to_gen_end_s": s(run["start_date"], gen["end_date"]),
        "mapped_s": s(first_queued, max(t["end_date"] for t in noop)),
        "reduce_s": s(max(t["end_date"] for t in noop), run["end_date"]),
        "total_task_ms": s(total["start_date"], total["end_date"]) * 1000,
    }


# --- reporting -------------------------------------------------------------------------

def render(results: list[dict], sql: list[dict[str, float]], args: argparse.Namespace,
           info: dict[str, str], settings: dict[str, str], services: str,
           started: datetime, sdk: str, rss: dict) -> str:
    med = lambda key: statistics.median(r[key] for r in results)  # noqa: E731
    lags = [v for r in results for v in r["queue_lag_ms"]]
    n = args.instances
    cpu_names = ["scheduler", "triggerer",
                 *sorted(k for k in results[0]["cpu"] if k.startswith("worker")), "postgres"]
    per_task = {k: 1000 * statistics.median(r["cpu"][k] for r in results) / (n + 2)
                for k in [*cpu_names, "machine"]}
    slots = sum(per_task[k] - per_task[f"{k} own"] for k in cpu_names
                if k.startswith("worker") and not k.endswith(" own"))
    workers_own = sum(per_task[k] for k in cpu_names if k.endswith(" own"))
    rows = "\n".join(
        f"| {i} | {r['duration_s']:.2f} | {r['rate']:.0f} | {r['run_to_gen_end_s']:.2f} | "
        f"{r['gen_to_pass_ms']:.1f} | {r['pass_to_expanded_ms']:.1f} | {r['expanded_to_start_ms']:.1f} | "
        f"{r['mapped_s']:.2f} | {r['reduce_s']:.2f} | {r['total_task_ms']:.1f} | "
        f"{percentile(r['queue_lag_ms'], 50):.1f} / {percentile(r['queue_lag_ms'], 99):.1f} | "
        f"{r['task_ms']:.1f} | {r['passes']} | "
        f"{_cpu(r['cpu'], cpu_names)} |"
        for i, r in enumerate(results, 1))
    runs = " / ".join(f"{r['duration_s']:.2f}" for r in results)
    stmt = [t["statement"] for t in sql]
    commit = [t["commit"] for t in sql]
    target = TARGETS_S.get(n)
    verdict = "" if target is None else (
        f"Target: {n:,} instances end to end in at most {target:g} s on this 2-core machine: "
        + ("met" if med("duration_s") <= target else "not met") + ". ")
    return textwrap.dedent(f"""
        ## Mapping: {started:%Y-%m-%d %H:%M} UTC, commit {info['commit']}

        - machine: {info['uname']}, {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM
        - load average (1 min) before/after: {info['load']} / {load_average()}
        - Python {info['python']}; services: {services}
        - runtime: DAG file on `{sdk}` (Task SDK slots)
        - scenario: `python -m bench mapping`: `total(noop.expand(x=gen()))`, `gen` returning
          {n} elements, `total` summing the lazy sequence; {len(results)} runs one after the other,
          1 scheduler, 1 triggerer, {args.workers} worker(s); DAG `max_active_tasks={args.max_active_tasks}`
        - settings: defaults of `shared/config.py` except max_map_length={settings['max_map_length']}
          (worker_concurrency={settings['worker_concurrency']} per worker, batch_size={settings['batch_size']});
          overrides: {settings['overrides']}

        **{n} mapped instances end to end (run start to end): median {med('duration_s'):.2f} s,
        {med('rate'):.0f} instances/s** (runs: {runs} s).
        {verdict}Queue -> start per instance: p50 {percentile(lags, 50):.1f} ms,
        p99 {percentile(lags, 99):.1f} ms over {len(lags)} instances (nearest rank).

        **Expansion of {n} instances**: the `expand_placeholders` statement alone (placeholder ->
        0..{n - 1}, one statement, fresh database, {len(sql)} reps): median {statistics.median(stmt):.1f} ms
        (min {min(stmt):.1f}, max {max(stmt):.1f}), its commit {statistics.median(commit):.1f} ms. In the
        daemons (medians of the runs): `gen` done -> the expanding pass began {med('gen_to_pass_ms'):.1f} ms;
        pass began -> `task_expanded` logged {med('pass_to_expanded_ms'):.1f} ms; `task_expanded` -> first
        `noop` started {med('expanded_to_start_ms'):.1f} ms.

        **CPU per task** (medians of the runs / {n + 2} tasks): slot processes
        {slots:.2f} ms, worker process {workers_own:.2f} ms (its loop: claims, finishes, the
        Execution API), scheduler {per_task['scheduler']:.2f} ms, PostgreSQL {per_task['postgres']:.2f} ms,
        whole machine {per_task['machine']:.2f} ms. **RSS after the runs**: {render_rss(rss)}.

        Columns: run start -> `gen` end; `gen` done -> pass; pass -> expanded; expanded -> first start
        (as above); mapped phase = first `noop` queued -> last `noop` ended; reduce = last `noop` ended
        -> run end (includes `total`); passes = scheduler transactions that queued `noop` instances;
        CPU seconds from trigger to run end: {' / '.join(cpu_names)} / whole machine (both CPUs,
        every process on it); a worker's figure includes its slot processes, postgres is the
        benchmark database's backends (the daemons' pools and this process's poll).

        | run | run (s) | inst/s | -> gen end (s) | gen -> pass (ms) | pass -> expanded (ms) | expanded -> start (ms) | mapped (s) | reduce (s) | `total` task (ms) | queue lag p50 / p99 (ms) | `noop` task p50 (ms) | passes | CPU s |
        |----:|----:|----:|----:|----:|----:|----:|----:|----:|----:|----:|----:|----:|----:|
        """) + rows + "\n"


def _cpu(cpu: dict[str, float], names: list[str]) -> str:
    return " / ".join(f"{cpu[k]:.1f}" for k in [*names, "machine"])


# --- the whole benchmark -----------------------------------------------------------------

async def bench(args: argparse.Namespace, root: Path) -> str:
    env = {"SLUICE_MAX_MAP_LENGTH": str(args.instances)}
    if args.concurrency:
        env["SLUICE_WORKER_CONCURRENCY"] = str(args.concurrency)
    async with bench_cluster(root, **env) as (cluster, services):
        sql = await time_expand_sql(cluster, args.instances, args.sql_reps)
        sdk = task_sdk()
        cluster.write_dag(f"{DAG_ID}.py", DAG_SOURCE.format(
            sdk=sdk, dag_id=DAG_ID, n=args.instances, max_active_tasks=args.max_active_tasks))
        info = machine()  # the commit whose code the daemons run
        cluster.start("scheduler")
        cluster.start("triggerer")
        for i in range(args.workers):
            name = "worker" if i == 0 else f"worker{i + 1}"
            if args.profile_worker and i == 0:
                start_profiled(cluster, name, args.profile_worker)
            else:
                cluster.start("worker", name=name)
        await wait_ready(cluster)
        started = datetime.now(UTC)
        results = []
        for number in range(1, args.runs + 1):
            results.append(await one_run(cluster, args))
            r = results[-1]
            print(f"run {number}/{args.runs}: {r['duration_s']:.2f} s, {r['rate']:.0f} instances/s, "
                  f"{r['passes']} passes", file=sys.stderr)
        rss = daemon_rss(cluster)
        shown = settings_used(cluster.env, ("max_map_length", "worker_concurrency", "batch_size"))
        return render(results, sql, args, info, shown, services, started, sdk, rss)


def start_profiled(cluster: Cluster, name: str, out: str) -> None:
    """Start a worker under cProfile (its stats written to ``out`` when it stops)."""
    import subprocess

    log = open(cluster.root / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
    cluster.procs[name] = subprocess.Popen(
        [sys.executable, "-m", "bench.profiled", out, "worker"], env=cluster.env,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench mapping",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1_000,
                        help="elements gen returns, i.e. mapped instances (default 1000)")
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--concurrency", type=int, default=0,
                        help="SLUICE_WORKER_CONCURRENCY (default: the product's)")
    parser.add_argument("--max-active-tasks", type=int, default=16,
                        help="the DAG's max_active_tasks (default 16, @dag's default)")
    parser.add_argument("--sql-reps", type=int, default=5,
                        help="timings of the expansion statement alone (default 5)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds one run may take at most (default 900)")
    parser.add_argument("--profile-worker", metavar="FILE",
                        help="run the (first) worker under cProfile, its stats written to FILE")
    add_output_args(parser)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.instances < 2 or args.workers < 1 or args.sql_reps < 1:
        parser.error("need --runs >= 1, --instances >= 2, --workers >= 1 and --sql-reps >= 1")
    return run_scenario(bench, args)
