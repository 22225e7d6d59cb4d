"""Hop latency: how long a chain of tasks waits between one task's end and the next one's start.

The scenario
    A DAG of ``--tasks`` (default 20) no-op ``@task`` tasks chained
    ``t01 >> t02 >> ... >> t20`` is triggered ``--runs`` times (default 7), one
    run after the other, against the real daemons started as processes
    (scheduler, triggerer and one worker at its default concurrency), with the
    product's default settings.

What is measured (all from the database's own timestamps, none from this process)
    hop        ``task_instance.start_date`` of ``t(k+1)`` minus ``end_date`` of ``t(k)``:
               the worker's "done" commit, its wake-up of the scheduler, the
               scheduling transaction, the queue message and the next claim.
    task       ``end_date - start_date`` of one task (claim to recorded outcome).
    run        ``dag_run.end_date - dag_run.start_date`` (end to end); also
               ``created_at -> start_date`` (trigger to run start).
    p50/p99    nearest-rank percentiles over every hop of every run; each run's
               median hop is listed too, so a cold first run is visible.

Services come from :func:`tests.services.resolve_services` (the test
suite's ``SLUICE_TEST_*`` URLs, else local default ports, else embedded
servers), in a database and stream prefix of the benchmark's own, dropped
afterwards. Every wait is on a condition with a timeout.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import asyncpg

from shared.config import Settings
from shared.db import migrate_url
from tests.cluster import FAST, Cluster
from tests.services import resolve_services

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results.md"
DAG_ID = "bench_hops"
AIRFLOW_HOP_S = 1.0  # what a hop costs in Airflow 3 (scheduler loop + task supervisor start)
TARGET_P50_MS = 3.0  # Sluice's goal for the median hop

DAG_SOURCE = '''
"""Benchmark: a chain of {n} no-op tasks."""
from datetime import datetime

from shared.sdk import dag, task


@task
def noop():
    return None


@dag(dag_id="{dag_id}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def bench_hops():
    previous = None
    for i in range(1, {n} + 1):
        current = noop.override(task_id=f"t{{i:02d}}")()
        if previous is not None:
            previous >> current
        previous = current


bench_hops()
'''

TIS_SQL = """
SELECT ti.task_id, ti.start_date, ti.end_date
  FROM task_instance ti JOIN dag_run r ON r.id = ti.run_pk
 WHERE r.run_id = $1 ORDER BY ti.task_id
"""
RUN_SQL = "SELECT state, created_at, start_date, end_date FROM dag_run WHERE run_id = $1"


# --- measuring -----------------------------------------------------------------------

async def measure(cluster: Cluster, runs: int, timeout_s: float) -> list[dict]:
    """Trigger the chain ``runs`` times, one after the other; return each run's figures."""
    results = []
    for number in range(1, runs + 1):
        run_id = await cluster.trigger(DAG_ID)
        doc = await cluster.wait_run(run_id, timeout=timeout_s)
        if doc["state"] != "success":
            raise RuntimeError(f"run {run_id} ended {doc['state']}: {doc['tasks']}")
        conn = await cluster.connect()
        try:
            run = await conn.fetchrow(RUN_SQL, run_id)
            tis = await conn.fetch(TIS_SQL, run_id)
        finally:
            await conn.close()
        hops = [(b["start_date"] - a["end_date"]).total_seconds() * 1000
                for a, b in zip(tis, tis[1:], strict=False)]
        results.append({
            "run": number, "run_id": run_id, "hops_ms": hops,
            "task_ms": statistics.median((t["end_date"] - t["start_date"]).total_seconds() * 1000
                                         for t in tis),
            "queued_ms": (run["start_date"] - run["created_at"]).total_seconds() * 1000,
            "duration_ms": (run["end_date"] - run["start_date"]).total_seconds() * 1000,
        })
        print(f"run {number}/{runs}: median hop {statistics.median(hops):.3f} ms, "
              f"run {results[-1]['duration_ms']:.1f} ms", file=sys.stderr)
    return results


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``p`` % of values <= it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# --- the environment the figures came from --------------------------------------------

def _sh(*args: str) -> str:
    try:
        return subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def load_average() -> str:
    """1-minute load average: other work on the machine skews latency figures."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def machine() -> dict[str, str]:
    cpu, mem = "unknown", "unknown"
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in
                    Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith(("model name", "Model", "Hardware"))), cpu)
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    commit = _sh("git", "rev-parse", "--short", "HEAD") or "unknown"
    if _sh("git", "status", "--porcelain"):
        commit += " (dirty)"
    return {"uname": _sh("uname", "-srm") or platform.platform(), "nproc": str(os.cpu_count()),
            "memory": mem, "cpu": cpu, "commit": commit,
            "python": platform.python_version(), "load": load_average()}


def _where(url: str) -> str:
    """``host:port`` of a service URL, never its credentials."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}".rstrip(":")


def settings_used(env: dict[str, str]) -> dict[str, str]:
    """The SLUICE_ settings given to the daemons beyond the plumbing (URLs, folders, prefix)."""
    plumbing = {"SLUICE_DATABASE_URL", "SLUICE_REDIS_URL", "SLUICE_STREAM_PREFIX",
                "SLUICE_DAGS_FOLDER", "SLUICE_HOME"}
    overrides = {k: v for k, v in env.items() if k.startswith("SLUICE_") and k not in plumbing}
    effective = Settings(**{k.removeprefix("SLUICE_").lower(): v for k, v in overrides.items()})
    shown = {k: str(getattr(effective, k)) for k in
             ("worker_concurrency", "batch_size", "repair_interval_s", "worker_heartbeat_s")}
    shown["overrides"] = ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "none"
    return shown


# --- reporting -----------------------------------------------------------------------

HEADER = f"""# Sluice benchmarks

`make bench` (`.venv/bin/python -m bench`) runs the scenarios in `bench/` against
the real daemons and appends a section here per run; see `bench/hops.py` for
exactly what is measured.

**Hop latency** is the gap between one task's end and the next task's start in a
chain. Airflow 3 needs about {AIRFLOW_HOP_S:g} s per hop; Sluice's target is a p50 of
{TARGET_P50_MS:g} ms. Each section below states the target next to what was measured.
"""


def render(results: list[dict], info: dict[str, str], settings: dict[str, str],
           services: str, tasks: int, started: datetime) -> str:
    hops = [h for r in results for h in r["hops_ms"]]
    p50, p99 = percentile(hops, 50), percentile(hops, 99)
    durations = [r["duration_ms"] for r in results]
    rows = "\n".join(
        f"| {r['run']} | {statistics.median(r['hops_ms']):.3f} | {min(r['hops_ms']):.3f} | "
        f"{max(r['hops_ms']):.3f} | {r['task_ms']:.3f} | {r['queued_ms']:.3f} | "
        f"{r['duration_ms']:.3f} |"
        for r in results)
    verdict = "met" if p50 <= TARGET_P50_MS else "not met"
    return textwrap.dedent(f"""
        ## Hops: {started:%Y-%m-%d %H:%M} UTC, commit {info['commit']}

        - machine: {info['uname']}, {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM
        - load average (1 min) before/after: {info['load']} / {load_average()}
        - Python {info['python']}; services: {services}
        - scenario: chain of {tasks} no-op `@task` tasks, {len(results)} runs one after the other,
          1 scheduler, 1 triggerer, 1 worker
        - settings: defaults of `shared/config.py` (worker_concurrency={settings['worker_concurrency']},
          batch_size={settings['batch_size']}, repair_interval_s={settings['repair_interval_s']},
          worker_heartbeat_s={settings['worker_heartbeat_s']}); overrides: {settings['overrides']}

        **Hop p50 {p50:.3f} ms, p99 {p99:.3f} ms** over {len(hops)} hops
        (min {min(hops):.3f} ms, max {max(hops):.3f} ms; nearest-rank percentiles).
        Target p50 {TARGET_P50_MS:g} ms: {verdict}. Airflow 3: about {AIRFLOW_HOP_S * 1000:g} ms per hop.
        Run duration (start to end, {tasks} tasks): median {statistics.median(durations):.3f} ms,
        min {min(durations):.3f} ms, max {max(durations):.3f} ms.

        | run | median hop (ms) | min hop (ms) | max hop (ms) | median task (ms) | queued -> started (ms) | run duration (ms) |
        |----:|----:|----:|----:|----:|----:|----:|
        """) + rows + "\n"


def write_results(section: str, path: Path) -> None:
    text = path.read_text() if path.exists() else HEADER
    path.write_text(text.rstrip("\n") + "\n" + section)


# --- the whole benchmark ---------------------------------------------------------------

async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def bench(args: argparse.Namespace, root: Path) -> str:
    admin_url, redis_url, stop_services = resolve_services(root)
    name = f"sluice_bench_{os.getpid()}"
    db_url = f"{admin_url.rpartition('/')[0]}/{name}"
    cluster = None
    try:
        await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await _admin(admin_url, f'CREATE DATABASE "{name}"')
        await migrate_url(db_url)
        dags = root / "dags"
        dags.mkdir()
        cluster = Cluster(root, db_url=db_url, redis_url=redis_url,
                          prefix=f"bench{uuid.uuid4().hex[:8]}", dags_folder=dags)
        # Product defaults, not the test suite's fast-failure tuning.
        cluster.env = {k: v for k, v in cluster.env.items() if k not in FAST}
        cluster.write_dag("bench_hops.py", DAG_SOURCE.format(n=args.tasks, dag_id=DAG_ID))
        info = machine()  # the commit whose code the daemons run
        cluster.start_all()
        started = datetime.now(UTC)
        results = await measure(cluster, args.runs, args.timeout)
        return render(results, info, settings_used(cluster.env),
                      f"PostgreSQL {_where(admin_url)}, Redis {_where(redis_url)}",
                      args.tasks, started)
    except BaseException:
        if cluster is not None:
            for daemon in ("scheduler", "worker", "triggerer"):
                if (root / f"{daemon}.log").exists():
                    tail = cluster.log(daemon).splitlines()[-20:]
                    print(f"--- {daemon}.log (last lines)\n" + "\n".join(tail), file=sys.stderr)
        raise
    finally:
        if cluster is not None:
            cluster.stop_all()
        await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        stop_services()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of the chain (default 7)")
    parser.add_argument("--tasks", type=int, default=20, help="tasks in the chain (default 20)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds one run may take at most (default 120)")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="markdown file the section is appended to")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.tasks < 2:
        parser.error("need --runs >= 1 and --tasks >= 2")
    root = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    try:
        section = anyio.run(bench, args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(section)
    if not args.no_write:
        write_results(section, args.results)
        print(f"appended to {args.results}", file=sys.stderr)
    return 0
