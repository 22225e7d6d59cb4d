"""Deferral round trip: from a trigger yielding its event to ``next_method`` starting on a worker.

The scenario
    One task defers ``--rounds`` (default 200) times in a row: ``execute``
    defers on a ``--delay`` (default 0.1 s) trigger due ``now + delay`` (computed
    in the task exactly as ``TimeDeltaTrigger`` does; it sleeps once until then), ``resume`` (its ``next_method``) records its
    sample and defers again. The DAG is triggered ``--runs`` (default 3) times,
    one run after the other, against real scheduler, triggerer and worker
    processes with the product's default settings. One deferral at a time:
    this is the latency of one round trip, not the throughput of many.

Where the timestamps come from (all on one machine, so one clock)
    due       the trigger's ``moment``.
    started   the triggerer's clock when the trigger's ``run()`` began   } carried in the
    yielded   the triggerer's clock when ``run()`` yielded its event    } event's payload
    fired     the ``trigger_fired`` JSON log line of the triggerer, written right after
              the commit of ``deferred -> scheduled`` (n-th line of the task = n-th round)
    claimed   the worker's ``task_started`` JSON log line, written when the worker has
              claimed the instance and hands it to a slot process ((n+1)-th line)
    resumed   ``time.time()`` on the first line of ``resume`` in the slot process,
              after the operator was re-initialised.
    Each round's ``deferred`` (just before ``defer()``), payload and ``resumed`` are
    pushed as an XCom and read from the database afterwards.

What is reported
    round trip  ``resumed - yielded`` (the figure asked for), split into
                ``fired - yielded`` (triggerer's transaction), ``claimed - fired`` (wake-up
                of the scheduler, scheduling, queue message, worker claim) and
                ``resumed - claimed`` (slot: the try's start, operator re-init, ``next_method``).
    defer leg   ``started - deferred``: the worker's deferral commit, the triggers
                stream wake-up, the triggerer's claim and the trigger's construction.
    p50/p99     nearest-rank percentiles over every round of every run, and each run's p50.
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
    load_average,
    log_events,
    machine,
    percentile,
    run_scenario,
    settings_used,
    summary,
    wait_ready,
)
from tests.cluster import Cluster

DAG_ID = "bench_deferral"
STAGES = ("round_trip", "triggerer_commit", "to_worker", "runner_start", "defer_leg", "yield_lag")

DAG_SOURCE = '''
"""Benchmark: one task deferring {rounds} times in a row on a {delay:g} s trigger."""
import asyncio
import time
from datetime import UTC, datetime, timedelta

from airflow.sdk import BaseOperator, dag
from airflow.triggers.base import BaseTrigger, TriggerEvent


class StampedDateTimeTrigger(BaseTrigger):
    """Fires at ``moment`` (one sleep, not the stock DateTimeTrigger's second-long steps);
    its event also says when it started and yielded."""

    def __init__(self, moment):
        super().__init__()
        self.moment = moment

    def serialize(self):
        return ("{dag_id}.StampedDateTimeTrigger", {{"moment": self.moment}})

    async def run(self):
        started = time.time()
        await asyncio.sleep(max(0.0, self.moment.timestamp() - time.time()))
        yield TriggerEvent({{"due": self.moment.timestamp(), "started": started,
                            "yielded": time.time()}})


class Bouncer(BaseOperator):
    def __init__(self, *, rounds, delay_s, **kwargs):
        super().__init__(**kwargs)
        self.rounds = rounds
        self.delay_s = delay_s

    def execute(self, context):
        self._defer(0)

    def resume(self, context, event, n, deferred):
        resumed = time.time()
        context["ti"].xcom_push(key=f"round_{{n:05d}}",
                                value={{**event, "deferred": deferred, "resumed": resumed}})
        if n + 1 < self.rounds:
            self._defer(n + 1)
        return n + 1

    def _defer(self, n):
        moment = datetime.now(UTC) + timedelta(seconds=self.delay_s)  # as TimeDeltaTrigger
        self.defer(trigger=StampedDateTimeTrigger(moment), method_name="resume",
                   kwargs={{"n": n, "deferred": time.time()}})


@dag(dag_id="{dag_id}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def {dag_id}():
    Bouncer(task_id="bounce", rounds={rounds}, delay_s={delay})


{dag_id}()
'''

SAMPLES_SQL = """
SELECT x.key, x.value FROM xcom x JOIN dag_run r ON r.id = x.run_pk
 WHERE r.run_id = $1 AND x.task_id = 'bounce' AND x.key LIKE 'round_%' ORDER BY x.key
"""


# --- measuring -----------------------------------------------------------------------

async def one_run(cluster: Cluster, args: argparse.Namespace) -> dict[str, list[float]]:
    run_id = await cluster.trigger(DAG_ID)
    doc = await cluster.wait_run(run_id, timeout=args.rounds * (args.delay + 1.0) + 30)
    if doc["state"] != "success":
        raise RuntimeError(f"run {run_id} ended {doc['state']}: {doc['tasks']}")
    conn = await cluster.connect()
    try:
        samples = [r["value"] for r in await conn.fetch(SAMPLES_SQL, run_id)]
    finally:
        await conn.close()
    fired = [e["ts"].timestamp() for e in log_events(cluster, "triggerer", "trigger_fired")
             if e.get("run_id") == run_id]
    claimed = [e["ts"].timestamp() for e in log_events(cluster, "worker", "task_started")
               if e.get("run_id") == run_id][1:]  # the first is the initial execute
    if not len(samples) == len(fired) == len(claimed) == args.rounds:
        raise RuntimeError(f"expected {args.rounds} rounds, found {len(samples)} samples, "
                           f"{len(fired)} trigger_fired and {len(claimed)} resumed task_started")
    return stages(samples, fired, claimed)


def stages(samples: list[dict], fired: list[float], claimed: list[float]) -> dict[str, list[float]]:
    """Milliseconds of each stage, per round, in round order."""
    ms = lambda a, b: [(y - x) * 1000 for x, y in zip(a, b, strict=True)]  # noqa: E731
    col = lambda key: [s[key] for s in samples]  # noqa: E731
    return {
        "round_trip": ms(col("yielded"), col("resumed")),
        "triggerer_commit": ms(col("yielded"), fired),
        "to_worker": ms(fired, claimed),
        "runner_start": ms(claimed, col("resumed")),
        "defer_leg": ms(col("deferred"), col("started")),
        "yield_lag": ms(col("due"), col("yielded")),
    }


# --- reporting -----------------------------------------------------------------------

LABELS = {
    "round_trip": "**round trip: yielded -> `next_method` started**",
    "triggerer_commit": "yielded -> `deferred -> scheduled` committed (`trigger_fired`)",
    "to_worker": "committed -> worker claimed (`task_started`)",
    "runner_start": "worker claimed -> `next_method` started (slot)",
    "defer_leg": "`defer()` called -> trigger's `run()` started",
    "yield_lag": "due -> yielded (trigger's own lateness)",
}


def render(results: list[dict], args: argparse.Namespace, info: dict[str, str],
           settings: dict[str, str], services: str, started: datetime) -> str:
    pooled = {k: summary([v for r in results for v in r[k]]) for k in STAGES}
    per_run = {k: [percentile(r[k], 50) for r in results] for k in STAGES}
    rows = "\n".join(
        f"| {LABELS[k]} | {pooled[k]['p50']:.2f} | {pooled[k]['p99']:.2f} | "
        f"{pooled[k]['min']:.2f} | {pooled[k]['max']:.2f} | "
        f"{' / '.join(f'{v:.2f}' for v in per_run[k])} |"
        for k in STAGES)
    rt = pooled["round_trip"]
    return textwrap.dedent(f"""
        ## Deferral: {started:%Y-%m-%d %H:%M} UTC, commit {info['commit']}

        - machine: {info['uname']}, {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM
        - load average (1 min) before/after: {info['load']} / {load_average()}
        - Python {info['python']}; services: {services}
        - scenario: `python -m bench deferral`: one task deferring {args.rounds} times in a row on a
          {args.delay:g} s trigger (due now + {args.delay:g} s, as `TimeDeltaTrigger`, one sleep),
          {len(results)} runs one after the other ({rt['n']} deferrals), 1 scheduler, 1 triggerer, 1 worker
        - settings: defaults of `shared/config.py` (worker_concurrency={settings['worker_concurrency']},
          batch_size={settings['batch_size']}, triggerer_capacity={settings['triggerer_capacity']});
          overrides: {settings['overrides']}

        **Deferral round trip (trigger yields -> `next_method` starts in the worker):
        p50 {rt['p50']:.2f} ms, p99 {rt['p99']:.2f} ms** over {rt['n']} deferrals (median of the
        runs' p50s {statistics.median(per_run['round_trip']):.2f} ms; nearest-rank percentiles).

        | stage (ms) | p50 | p99 | min | max | p50 of each run |
        |---|----:|----:|----:|----:|----:|
        """) + rows + "\n"


# --- the whole benchmark ---------------------------------------------------------------

async def bench(args: argparse.Namespace, root: Path) -> str:
    async with bench_cluster(root) as (cluster, services):
        cluster.write_dag(f"{DAG_ID}.py", DAG_SOURCE.format(dag_id=DAG_ID, rounds=args.rounds,
                                                            delay=args.delay))
        info = machine()  # the commit whose code the daemons run
        cluster.start_all()
        await wait_ready(cluster)
        started = datetime.now(UTC)
        results = []
        for number in range(1, args.runs + 1):
            results.append(await one_run(cluster, args))
            rt = results[-1]["round_trip"]
            print(f"run {number}/{args.runs}: round trip p50 {percentile(rt, 50):.2f} ms, "
                  f"p99 {percentile(rt, 99):.2f} ms", file=sys.stderr)
        shown = settings_used(cluster.env, ("worker_concurrency", "batch_size",
                                            "triggerer_capacity"))
        return render(results, args, info, shown, services, started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench deferral",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200,
                        help="deferrals in a row per run (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    parser.add_argument("--delay", type=float, default=0.1,
                        help="seconds each trigger sleeps (default 0.1)")
    add_output_args(parser)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.rounds < 1 or args.delay < 0:
        parser.error("need --runs >= 1, --rounds >= 1 and --delay >= 0")
    return run_scenario(bench, args)
