"""KubernetesPodOperator on Sluice: each mapped instance's pod overhead, and pods at once per worker.

The scenario
    One DAG: Airflow's ``KubernetesPodOperator`` mapped ``--count`` (default 20) times
    over a pod that does nothing (busybox ``true``, ``image_pull_policy="Never"``),
    ``get_logs=True``, ``do_xcom_push=False``, ``on_finish_action="delete_pod"``. Run
    once waiting in worker slots (``deferrable=False``) and once waiting in the
    triggerer (``deferrable=True``, ``KubernetesPodTrigger``), on Sluice's real
    scheduler, triggerer and worker (``--slots`` slots, default 4) and on the project's
    cluster (deploy/k8s/cluster.sh, brought up if it is not running and stopped
    afterwards only then). Run with ``.venv/bin/python -m bench.k8s_pods``.

What is measured (per mode)
    overhead     each instance's try ``end_date - start_date`` (task_instance): the pod's
                 whole life seen from Sluice (create, schedule, start, run ``true``, logs,
                 delete), since the pod itself does no work
    end to end   the run's ``end_date - start_date``
    at once      the most instances ``running`` (slots) or ``deferred`` (triggerer) at
                 one moment, sampled every 100 ms: how many concurrent pods one worker
                 dispatches
The cluster's own limits are printed with the figures: one node, 2 CPUs, kubelet
``--max-pods 110``, pods start one at a time through dockershim.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from bench.common import (
    add_output_args,
    bench_cluster,
    machine,
    machine_lines,
    run_scenario,
    summary,
    wait_ready,
)
from tests.cluster import Cluster

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "k8s" / "cluster.sh"
DAG_SOURCE = '''
from datetime import datetime

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import dag

for dag_id, deferrable in (("bench_k8s_slots", False), ("bench_k8s_deferrable", True)):
    @dag(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
         max_active_tasks=100000)
    def bench():
        KubernetesPodOperator.partial(
            task_id="pod", name="bench", namespace="default", image="sluice-k8s/busybox:1.35",
            image_pull_policy="Never", cmds=["true"], get_logs=True, do_xcom_push=False,
            on_finish_action="delete_pod", deferrable=deferrable, poll_interval=1,
            labels={{"app": "sluice-k8s-bench"}}, max_active_tis_per_dag=100000,
        ).expand(arguments=[[str(i)] for i in range({count})])

    bench()
'''


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def cluster_script(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


async def one_mode(cluster: Cluster, dag_id: str, state: str, count: int) -> dict:
    run_id = await cluster.trigger(dag_id)
    most, deadline = 0, time.monotonic() + 60 + 10 * count
    conn = await cluster.connect()
    try:
        while True:
            doc = await cluster.run_doc(run_id)
            if doc["state"] in ("success", "failed"):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} of {dag_id} did not finish")
            n = await conn.fetchval(
                "SELECT count(*) FROM task_instance ti JOIN dag_run r ON r.id = ti.run_pk "
                "WHERE r.run_id = $1 AND ti.state = $2", run_id, state)
            most = max(most, n)
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    pods = [t for t in doc["tasks"] if t["task_id"] == "pod"]
    if doc["state"] != "success":
        # figures of failed pods mean nothing: the daemons' logs are printed instead
        raise AssertionError(f"run {run_id} of {dag_id}: {doc['state']}, "
                             f"{sum(t['state'] != 'success' for t in pods)} pods failed")
    return {
        "dag_id": dag_id, "state": doc["state"], "count": len(pods),
        "failed": sum(t["state"] != "success" for t in pods),
        "end_to_end_s": round((ts(doc["end_date"]) - ts(doc["start_date"])).total_seconds(), 2),
        "overhead_s": {k: round(v, 3) for k, v in summary(
            [(ts(t["end_date"]) - ts(t["start_date"])).total_seconds() for t in pods]).items()},
        f"most_{state}_at_once": most,
    }


async def bench(args: argparse.Namespace, root: Path) -> str:
    was_up = cluster_script("status", timeout=60).returncode == 0
    if not was_up:
        up = cluster_script("up")
        if up.returncode != 0:
            raise SystemExit(f"deploy/k8s/cluster.sh up failed:\n{up.stderr[-3000:]}")
    kubeconfig = next(line.split("=", 1)[1] for line in cluster_script("env").stdout.splitlines()
                      if line.startswith("export KUBECONFIG="))
    try:
        async with bench_cluster(root, SLUICE_WORKER_CONCURRENCY=str(args.slots)) as (
                cluster, services):
            cluster.env.pop("AIRFLOW_HOME", None)
            cluster.env.pop("KUBECONFIG", None)
            extra = json.dumps({"kube_config_path": kubeconfig, "namespace": "default"})
            out = cluster.cli("connections", "add", "kubernetes_default", "--conn-type",
                              "kubernetes", "--conn-extra", extra)
            assert out.returncode == 0, out.stderr
            cluster.write_dag("bench_k8s.py", DAG_SOURCE.format(count=args.count))
            cluster.start_all()
            await wait_ready(cluster)
            results = [await one_mode(cluster, "bench_k8s_slots", "running", args.count),
                       await one_mode(cluster, "bench_k8s_deferrable", "deferred", args.count)]
            status = cluster_script("status", timeout=60).stdout
    finally:
        if not was_up:
            cluster_script("down", timeout=300)
    for r in results:
        print(json.dumps(r), file=sys.stderr)
    lines = [f"\n## k8s_pods: {args.count} mapped KubernetesPodOperator pods, {args.slots} "
             f"worker slots ({datetime.now().isoformat(timespec='minutes')})\n",
             machine_lines(machine(), services),
             "- cluster: deploy/k8s/cluster.sh, Kubernetes 1.20.2, one node, kubelet "
             "--max-pods 110, dockershim; busybox `true` pods\n",
             "| mode | end to end | overhead p50 | p99 | max | most at once |",
             "|---|---|---|---|---|---|"]
    for r in results:
        o = r["overhead_s"]
        at_once = r.get("most_running_at_once", r.get("most_deferred_at_once"))
        lines.append(f"| {r['dag_id']} | {r['end_to_end_s']} s | {o['p50']} s | {o['p99']} s | "
                     f"{o['max']} s | {at_once} |")
    lines += ["", "```", status.strip(), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--slots", type=int, default=4)
    add_output_args(parser)
    return run_scenario(bench, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
