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
               Split at ``queued_at`` of ``t(k+1)`` (the start of the scheduling
               transaction that queued it): *end -> queued* is the worker's
               commit, its wake-up and the scheduler waking; *queued -> start*
               is the scheduling pass, its commit, the queue message and the
               worker waking to claim.
    task       ``end_date - start_date`` of one task (claim to recorded outcome).
    run        ``dag_run.end_date - dag_run.start_date`` (end to end); also
               ``created_at -> start_date`` (trigger to run start).
    p50/p99    nearest-rank percentiles over every hop of every run; each run's
               median hop is listed too, so a cold first run is visible.

Services come from :func:`tests.services.resolve_services` (the test
suite's ``SLUICE_TEST_*`` URLs, else local default ports, else embedded
servers), in a database and stream prefix of the benchmark's own, dropped
afterwards. Every wait is on a condition with a timeout. The DAG file imports from
``airflow.sdk``: tries run with Airflow's Task SDK.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

from bench.common import (
    add_output_args,
    bench_cluster,
    daemon_rss,
    load_average,
    machine,
    percentile,
    render_rss,
    run_scenario,
    settings_used,
    task_sdk,
    wait_ready,
)
from tests.cluster import Cluster

DAG_ID = "bench_hops"
AIRFLOW_HOP_S = 1.0  # what a hop costs in Airflow 3 (scheduler loop + task supervisor start)
TARGET_P50_MS = 5.0  # Sluice's goal for the median hop on the Task SDK runtime

DAG_SOURCE = '''
"""Benchmark: a chain of {n} no-op tasks."""
from datetime import datetime

from {sdk} import dag, task


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
SELECT ti.task_id, ti.queued_at, ti.start_date, ti.end_date
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
        to_queue = [(b["queued_at"] - a["end_date"]).total_seconds() * 1000
                    for a, b in zip(tis, tis[1:], strict=False)]
        to_start = [(b["start_date"] - b["queued_at"]).total_seconds() * 1000 for b in tis[1:]]
        results.append({
            "run": number, "run_id": run_id, "hops_ms": hops,
            "to_queue_ms": to_queue, "to_start_ms": to_start,
            "task_ms": statistics.median((t["end_date"] - t["start_date"]).total_seconds() * 1000
                                         for t in tis),
            "queued_ms": (run["start_date"] - run["created_at"]).total_seconds() * 1000,
            "duration_ms": (run["end_date"] - run["start_date"]).total_seconds() * 1000,
        })
        print(f"run {number}/{runs}: median hop {statistics.median(hops):.3f} ms "
              f"(end -> queued {statistics.median(to_queue):.3f}, queued -> start "
              f"{statistics.median(to_start):.3f}), run {results[-1]['duration_ms']:.1f} ms",
              file=sys.stderr)
    return results


# --- reporting -----------------------------------------------------------------------

def render(results: list[dict], info: dict[str, str], settings: dict[str, str],
           services: str, tasks: int, started: datetime, sdk: str, rss: dict) -> str:
    hops = [h for r in results for h in r["hops_ms"]]
    p50, p99 = percentile(hops, 50), percentile(hops, 99)
    durations = [r["duration_ms"] for r in results]
    rows = "\n".join(
        f"| {r['run']} | {statistics.median(r['hops_ms']):.3f} | "
        f"{statistics.median(r['to_queue_ms']):.3f} | {statistics.median(r['to_start_ms']):.3f} | "
        f"{min(r['hops_ms']):.3f} | {max(r['hops_ms']):.3f} | {r['task_ms']:.3f} | "
        f"{r['queued_ms']:.3f} | {r['duration_ms']:.3f} |"
        for r in results)
    to_queue = [h for r in results for h in r["to_queue_ms"]]
    to_start = [h for r in results for h in r["to_start_ms"]]
    verdict = "met" if p50 <= TARGET_P50_MS else "not met"
    return textwrap.dedent(f"""
        ## Hops: {started:%Y-%m-%d %H:%M} UTC, commit {info['commit']}

        - machine: {info['uname']}, {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM
        - load average (1 min) before/after: {info['load']} / {load_average()}
        - Python {info['python']}; services: {services}
        - runtime: DAG file on `{sdk}`; RSS after the runs: {render_rss(rss)}
        - scenario: chain of {tasks} no-op `@task` tasks, {len(results)} runs one after the other,
          1 scheduler, 1 triggerer, 1 worker
        - settings: defaults of `shared/config.py` (worker_concurrency={settings['worker_concurrency']},
          batch_size={settings['batch_size']}, repair_interval_s={settings['repair_interval_s']},
          worker_heartbeat_s={settings['worker_heartbeat_s']}); overrides: {settings['overrides']}

        **Hop p50 {p50:.3f} ms, p99 {p99:.3f} ms** over {len(hops)} hops
        (min {min(hops):.3f} ms, max {max(hops):.3f} ms; nearest-rank percentiles);
        of which end -> queued p50 {percentile(to_queue, 50):.3f} ms and
        queued -> start p50 {percentile(to_start, 50):.3f} ms.
        Target p50 {TARGET_P50_MS:g} ms: {verdict}. Airflow 3: about {AIRFLOW_HOP_S * 1000:g} ms per hop.
        Run duration (start to end, {tasks} tasks): median {statistics.median(durations):.3f} ms,
        min {min(durations):.3f} ms, max {max(durations):.3f} ms.

        | run | median hop (ms) | end -> queued (ms) | queued -> start (ms) | min hop (ms) | max hop (ms) | median task (ms) | run queued -> started (ms) | run duration (ms) |
        |----:|----:|----:|----:|----:|----:|----:|----:|----:|
        """) + rows + "\n"


# --- the whole benchmark ---------------------------------------------------------------

async def bench(args: argparse.Namespace, root: Path) -> str:
    async with bench_cluster(root) as (cluster, services):
        sdk = task_sdk()
        cluster.write_dag("bench_hops.py", DAG_SOURCE.format(n=args.tasks, dag_id=DAG_ID, sdk=sdk))
        info = machine()  # the commit whose code the daemons run
        cluster.start_all()
        await wait_ready(cluster)
        started = datetime.now(UTC)
        results = await measure(cluster, args.runs, args.timeout)
        rss = daemon_rss(cluster)
        shown = settings_used(cluster.env, ("worker_concurrency", "batch_size",
                                            "repair_interval_s", "worker_heartbeat_s"))
        return render(results, info, shown, services, args.tasks, started, sdk, rss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench hops",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of the chain (default 7)")
    parser.add_argument("--tasks", type=int, default=20, help="tasks in the chain (default 20)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds one run may take at most (default 120)")
    add_output_args(parser)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.tasks < 2:
        parser.error("need --runs >= 1 and --tasks >= 2")
    return run_scenario(bench, args)
