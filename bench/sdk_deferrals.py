"""Many mapped deferrals at once, Task SDK runtime: one run end to end, and where its time goes.

The scenario
    One DAG, one classic operator mapped ``--count`` (default 200) times. Each
    instance's ``execute()`` (Airflow's Task SDK, on a worker slot) defers on the
    standard provider's ``TimeDeltaTrigger(--seconds)`` (default 5); the event
    resumes it on a worker in ``execute_complete``, which returns the trigger's due
    moment. Real scheduler, triggerer and worker processes with the product's
    defaults; ``max_active_tasks`` is lifted so no DAG limit applies. Run with
    ``.venv/bin/python -m bench.sdk_deferrals``.

What is measured (per run)
    end to end   the run's ``end_date - start_date``: the issue's figure (200 x 5 s <= 5.5 s)
    deferred     first and last instance's trigger creation in ``execute()`` (its due moment
                 minus ``--seconds``) minus the run's start: the worker's first leg
    fire lag     triggerer's ``trigger_fired`` line minus the instance's due moment
    resume lag   the instance's ``end_date`` minus its due moment
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from bench.common import bench_cluster, log_events, summary, wait_ready
from tests.cluster import Cluster

DAG_ID = "bench_sdk_deferrals"
DAG_SOURCE = '''
from datetime import datetime, timedelta

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import BaseOperator, dag


class Nap(BaseOperator):
    def __init__(self, *, n, **kwargs):
        super().__init__(**kwargs)
        self.n = n

    def execute(self, context):
        self.defer(trigger=TimeDeltaTrigger(timedelta(seconds={seconds})),
                   method_name="execute_complete")

    def execute_complete(self, context, event=None):
        return {{"n": self.n, "due": event.isoformat()}}


@dag(dag_id="{dag_id}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     max_active_tasks=100000)
def bench():
    Nap.partial(task_id="nap", max_active_tis_per_dag=100000).expand(n=list(range({count})))


bench()
'''


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def one_run(cluster: Cluster, args: argparse.Namespace) -> dict:
    run_id = await cluster.trigger(DAG_ID)
    doc = await cluster.wait_run(run_id, timeout=args.seconds + args.count + 60)
    naps = [t for t in doc["tasks"] if t["task_id"] == "nap"]
    failed = [t for t in naps if t["state"] != "success"]
    start = ts(doc["start_date"])
    due = {t["map_index"]: ts(t["return_value"]["due"]) for t in naps if t["return_value"]}
    fired = {e["map_index"]: e["ts"] for e in log_events(cluster, "triggerer", "trigger_fired")
             if e.get("run_id") == run_id}
    return {
        "state": doc["state"], "failed": len(failed), "count": len(naps),
        "end_to_end_s": (ts(doc["end_date"]) - start).total_seconds(),
        "deferred_s": [round(f((d - start).total_seconds() - args.seconds for d in due.values()),
                             3) for f in (min, max)],
        "fire_lag_s": summary([(fired[i] - d).total_seconds() for i, d in due.items()
                               if i in fired]),
        "resume_lag_s": summary([(ts(t["end_date"]) - due[t["map_index"]]).total_seconds()
                                 for t in naps if t["map_index"] in due]),
    }


async def bench(args: argparse.Namespace, root: Path) -> list[dict]:
    results = []
    for _ in range(args.runs):
        scratch = root / f"run{len(results)}"
        scratch.mkdir(parents=True)
        async with bench_cluster(scratch) as (cluster, _services):
            cluster.env.pop("AIRFLOW_HOME", None)
            cluster.write_dag("bench_sdk_deferrals.py", DAG_SOURCE.format(
                dag_id=DAG_ID, seconds=args.seconds, count=args.count))
            cluster.start_all()
            await wait_ready(cluster)
            results.append(await one_run(cluster, args))
            print(json.dumps(results[-1]), file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    try:
        results = asyncio.run(bench(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results, indent=1))
    return 0 if all(r["failed"] == 0 and r["state"] == "success" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
