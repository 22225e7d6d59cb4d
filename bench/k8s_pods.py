"""Pods on Sluice: each mapped instance's pod overhead, and pods at once per worker.

The scenario
    Three modes (``--modes``, default all), each a DAG of ``--count`` (default 20) mapped
    instances whose pod does nothing, on Sluice's real scheduler, triggerer and workers
    and on the project's cluster (deploy/k8s/cluster.sh, brought up if it is not running
    and stopped afterwards only then). Run with ``.venv/bin/python -m bench.k8s_pods``.

    slots        Airflow's ``KubernetesPodOperator`` over busybox ``true``
                 (``image_pull_policy="Never"``, ``get_logs=True``, ``do_xcom_push=False``,
                 ``on_finish_action="delete_pod"``), waiting in a local worker's slots
                 (``--slots``, default 4; ``deferrable=False``)
    deferrable   the same, waiting in the triggerer (``deferrable=True``,
                 ``KubernetesPodTrigger``)
    execution    a ``@task(executor="KubernetesExecutor")`` returning None, run by a
                 Kubernetes-mode worker (``SLUICE_WORKER_EXECUTOR=kubernetes``): each try
                 in a pod of its own running the Task SDK (``worker.pod_task``) from this
                 checkout's interpreter, mounted read-only (the e2e tests' pod template)

What is measured (per mode)
    overhead     each instance's try ``end_date - start_date`` (task_instance): the pod's
                 whole life seen from Sluice (create, schedule, start, run ``true``, logs,
                 delete), since the pod itself does no work
    end to end   the run's ``end_date - start_date``
    at once      the most instances ``running`` (slots, execution) or ``deferred``
                 (triggerer) at one moment, sampled every 100 ms: how many concurrent pods
                 one worker dispatches
For the execution mode also: the Kubernetes-mode worker's RSS (``/proc``) when the most
instances ran and its highest, the stages of each try from one watch of its pods (try
started -> pod seen -> pod ``Running`` -> try ended -> container exited -> pod ended seen
-> pod deleted, this machine's clock), the pods the scheduler left pending and why, the
pods left ``LEFT_AFTER_S`` after the run, and the warnings and errors in the worker's log.
The cluster's own limits are printed with the figures: one node, 2 CPUs, kubelet
``--max-pods 110``, pods start one at a time through dockershim.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from bench.common import (
    add_output_args,
    bench_cluster,
    machine,
    machine_lines,
    percentile,
    rss_mib,
    run_scenario,
    summary,
    wait_ready,
)
from tests.cluster import Cluster
from tests.k8s.conftest import Kube

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "k8s" / "cluster.sh"
MODES = ("slots", "deferrable", "execution")
POD_WORKER = "worker-pods"  # a worker's name: bench.common.wait_ready waits for worker_ready
BENCH_LABEL = ("app", "sluice-k8s-bench")
LEFT_AFTER_S = 150  # how long after the run the execution mode's pods may take to go
DAG_SOURCE = """
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
"""
EXEC_DAG_SOURCE = """
from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="bench_k8s_exec", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     max_active_tasks=100000)
def bench():
    @task(executor="KubernetesExecutor", max_active_tis_per_dag=100000)
    def pod(i):
        return None

    pod.expand(i=list(range({count})))


bench()
"""
DAG_OF = {"slots": ("bench_k8s_slots", "running"),
          "deferrable": ("bench_k8s_deferrable", "deferred"),
          "execution": ("bench_k8s_exec", "running")}


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def cluster_script(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def cluster_env() -> dict[str, str]:
    """What ``cluster.sh env`` exports (KUBECONFIG, SLUICE_K8S_HOST_ADDRESS ...)."""
    return dict(line.removeprefix("export ").split("=", 1)
                for line in cluster_script("env", timeout=60).stdout.splitlines()
                if line.startswith("export "))


class PodTimeline:
    """When one watch of the execution mode's pods first saw each pod, saw it ``Running``,
    ended and deleted (this machine's wall clock, which the database's timestamps share)."""

    def __init__(self, v1, selector: str):
        self.v1, self.selector = v1, selector
        self.seen: dict[str, dict] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PodTimeline:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(15)

    def _run(self) -> None:
        from kubernetes import watch

        w = watch.Watch()  # resumed from its resource version: no event lost between streams
        while not self.stopped.is_set():
            try:
                since = {"resource_version": w.resource_version} if w.resource_version else {}
                for event in w.stream(self.v1.list_namespaced_pod, "default",
                                      label_selector=self.selector, timeout_seconds=2, **since):
                    self._mark(event["type"], event["object"], time.time())
            except Exception as exc:  # noqa: BLE001 - a blip: watch again; said in the figures
                w = watch.Watch()
                self.seen.setdefault("__errors__", {}).setdefault("n", 0)
                self.seen["__errors__"]["n"] += 1
                self.seen["__errors__"]["last"] = f"{type(exc).__name__}: {exc}"[:200]
                time.sleep(0.5)

    def _mark(self, kind: str, pod, now: float) -> None:
        marks = self.seen.setdefault(pod.metadata.name, {"seen": now})
        marks["map_index"] = int((pod.metadata.labels or {}).get("map_index", -1))
        phase = pod.status.phase
        if phase == "Running" or phase in ("Succeeded", "Failed"):
            marks.setdefault("running", now)
        if phase in ("Succeeded", "Failed"):
            marks.setdefault("ended", now)
            marks["phase"] = phase
        if pod.metadata.deletion_timestamp is not None:
            marks.setdefault("deleting", now)
        if kind == "DELETED":
            marks.setdefault("deleted", now)
        for cond in pod.status.conditions or ():
            if cond.type == "PodScheduled" and cond.status == "False":
                marks["unschedulable"] = f"{cond.reason}: {cond.message}"
        for status in pod.status.container_statuses or ():
            done = status.state.terminated
            if done is not None and done.finished_at is not None:  # the runtime's clock, 1 s
                marks["exited"] = done.finished_at.timestamp()

    def present(self) -> set[str]:
        """The pods the cluster still has, listed now."""
        return {p.metadata.name for p in self.v1.list_namespaced_pod(
            "default", label_selector=self.selector).items}

    def pods(self) -> list[dict]:
        return [m for name, m in self.seen.items() if name != "__errors__"]


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment."""
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


async def poll_run(cluster: Cluster, run_id: str, dag_id: str, state: str, count: int,
                   pid: int | None) -> tuple[dict, int, dict[str, float]]:
    """Until the run ends: its document, the most instances in ``state`` at one moment and
    the RSS of process ``pid`` (if any) then and at its highest, MiB."""
    most, rss, deadline = 0, {"at_most": 0.0, "max": 0.0}, time.monotonic() + 120 + 10 * count
    conn = await cluster.connect()
    try:
        while True:
            doc = await cluster.run_doc(run_id)
            if doc["state"] in ("success", "failed"):
                return doc, most, rss
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} of {dag_id} did not finish")
            n = await conn.fetchval(
                "SELECT count(*) FROM task_instance ti JOIN dag_run r ON r.id = ti.run_pk "
                "WHERE r.run_id = $1 AND ti.state = $2", run_id, state)
            now_rss = rss_mib(pid) if pid else 0.0
            rss["max"] = max(rss["max"], now_rss)
            if n > most or (n == most and now_rss > rss["at_most"]):
                rss["at_most"] = now_rss
            most = max(most, n)
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


def figures(doc: dict, dag_id: str, state: str, most: int) -> dict:
    pods = [t for t in doc["tasks"] if t["task_id"] == "pod"]
    if doc["state"] != "success":
        # figures of failed pods mean nothing: the daemons' logs are printed instead
        raise AssertionError(f"run {doc['run_id']} of {dag_id}: {doc['state']}, "
                             f"{sum(t['state'] != 'success' for t in pods)} pods failed")
    return {
        "dag_id": dag_id, "state": doc["state"], "count": len(pods),
        "failed": sum(t["state"] != "success" for t in pods),
        "end_to_end_s": round((ts(doc["end_date"]) - ts(doc["start_date"])).total_seconds(), 2),
        "overhead_s": rounded(
            [(ts(t["end_date"]) - ts(t["start_date"])).total_seconds() for t in pods]),
        f"most_{state}_at_once": most,
    }


def rounded(values: list[float]) -> dict[str, float]:
    """``summary`` with the 95th percentile, rounded to ms."""
    return {k: round(v, 3) for k, v in {**summary(values), "p95": percentile(values, 95)}.items()}


async def one_mode(cluster: Cluster, mode: str, count: int) -> dict:
    dag_id, state = DAG_OF[mode]
    doc, most, _ = await poll_run(cluster, await cluster.trigger(dag_id), dag_id, state,
                                  count, None)
    return {"mode": mode, **figures(doc, dag_id, state, most)}


async def execution_mode(cluster: Cluster, v1, count: int) -> dict:
    """The execution mode's run with its pods watched: the figures, the stages of each try,
    the worker's RSS, the pods left and the worker's warnings."""
    dag_id, state = DAG_OF["execution"]
    pid = cluster.procs[POD_WORKER].pid
    with PodTimeline(v1, f"sluice.dev/worker,dag_id={dag_id}") as timeline:
        doc, most, rss = await poll_run(cluster, await cluster.trigger(dag_id), dag_id, state,
                                        count, pid)
        ended = time.time()
        while time.time() < ended + LEFT_AFTER_S and any(
                "deleted" not in m for m in timeline.pods()):
            await asyncio.sleep(0.2)
    result = {"mode": "execution", **figures(doc, dag_id, state, most),
              "worker_rss_mib": {k: round(v, 1) for k, v in rss.items()},
              "stages_s": stages(doc, timeline.pods()),
              "pods_seen": len(timeline.pods()),
              "unschedulable": unschedulable(timeline.pods()),
              "pods_left_after_run": len(timeline.present()),
              "pods_never_deleted": sum(not {"deleting", "deleted"} & m.keys()
                                        for m in timeline.pods()),
              "last_deleted_after_run_s": round(max(
                  (m.get("deleted", ended) for m in timeline.pods()), default=ended) - ended, 1),
              "watch_errors": timeline.seen.get("__errors__", {}),
              "worker_warnings": warnings(cluster, POD_WORKER)}
    marks = timeline.pods()
    result["most_pods_at_once"] = most_at_once(
        [(m["seen"], m.get("deleted", ended)) for m in marks])
    result["most_pods_running_at_once"] = most_at_once(
        [(m["running"], m.get("ended", ended)) for m in marks if "running" in m])
    return result


STAGES = {"create": "try started -> pod seen", "start": "pod seen -> Running",
          "run": "Running -> try ended (the API took its end)",
          "exit": "try ended -> container exited (runtime's clock, 1 s)",
          "report": "container exited -> pod ended seen", "delete": "pod ended -> deleted"}


def stages(doc: dict, marks: list[dict]) -> dict[str, dict[str, float]]:
    """Each stage of a try, seconds: try start -> pod seen -> ``Running`` -> try end (the
    API took it) -> pod ended -> pod deleted; medians and the rest over the tries."""
    tries = {t["map_index"]: t for t in doc["tasks"] if t["task_id"] == "pod"}
    spans: dict[str, list[float]] = {k: [] for k in STAGES}
    for m in marks:
        t = tries.get(m["map_index"])
        if t is None or not {"running", "ended", "deleted", "exited"} <= m.keys():
            continue
        start, end = ts(t["start_date"]).timestamp(), ts(t["end_date"]).timestamp()
        for key, a, b in (("create", start, m["seen"]), ("start", m["seen"], m["running"]),
                          ("run", m["running"], end), ("exit", end, m["exited"]),
                          ("report", m["exited"], m["ended"]),
                          ("delete", m["ended"], m["deleted"])):
            spans[key].append(b - a)
    return {k: rounded(v) for k, v in spans.items() if v}


CONSOLE_LINE = re.compile(r"\S+ \[(?P<level>[a-z]+)\s*\] (?P<event>\S+)")


def unschedulable(marks: list[dict]) -> dict[str, int]:
    """How many pods the scheduler left pending, by its reason."""
    found: dict[str, int] = {}
    for m in marks:
        if "unschedulable" in m:
            found[m["unschedulable"]] = found.get(m["unschedulable"], 0) + 1
    return found


def warnings(cluster: Cluster, name: str) -> dict[str, int]:
    """How many warning, error and critical JSON lines of each event ``name``'s log holds."""
    found: dict[str, int] = {}
    path = cluster.root / f"{name}.log"
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            entry = json.loads(line)
        except ValueError:  # a line in the console format
            match = CONSOLE_LINE.match(line)
            entry = match.groupdict() if match else {}
        if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
            key = f"{entry['level']}: {entry.get('event')}"
            found[key] = found.get(key, 0) + 1
    return found


def start_pod_worker(cluster: Cluster, root: Path, kube: Kube) -> None:
    """A Kubernetes-mode worker whose pods run this checkout (the e2e tests' pod template,
    labelled as this bench's pods)."""
    from tests.k8s.test_execution_mode_e2e import free_port, pod_template

    template = pod_template(root / "pod.json", kube, cluster.dags_folder)
    pod = json.loads(template.read_text())
    pod["metadata"]["labels"] = dict([BENCH_LABEL])
    template.write_text(json.dumps(pod, indent=2))
    port = free_port()
    cluster.start("worker", POD_WORKER, SLUICE_WORKER_EXECUTOR="kubernetes",
                  SLUICE_KUBERNETES_CONFIG=str(kube.kubeconfig),
                  SLUICE_KUBERNETES_POD_TEMPLATE=str(template),
                  SLUICE_EXECUTION_API_HOST="0.0.0.0", SLUICE_EXECUTION_API_PORT=str(port),
                  SLUICE_KUBERNETES_API_URL=f"http://{kube.host_address}:{port}/")


def delete_bench_pods(v1) -> None:
    v1.delete_collection_namespaced_pod("default", label_selector="=".join(BENCH_LABEL),
                                        grace_period_seconds=0)


async def run_modes(args: argparse.Namespace, root: Path, env: dict[str, str]) -> tuple[
        list[dict], str]:
    kube = Kube(kubeconfig=Path(env["KUBECONFIG"]), host_address=env["SLUICE_K8S_HOST_ADDRESS"])
    v1 = kube.core_v1()
    async with bench_cluster(root) as (cluster, services):
        cluster.env.pop("AIRFLOW_HOME", None)
        cluster.env.pop("KUBECONFIG", None)
        extra = json.dumps({"kube_config_path": env["KUBECONFIG"], "namespace": "default"})
        out = cluster.cli("connections", "add", "kubernetes_default", "--conn-type",
                          "kubernetes", "--conn-extra", extra)
        assert out.returncode == 0, out.stderr
        cluster.write_dag("bench_k8s.py", DAG_SOURCE.format(count=args.count))
        cluster.write_dag("bench_k8s_exec.py", EXEC_DAG_SOURCE.format(count=args.count))
        cluster.start("scheduler")
        cluster.start("triggerer")
        if {"slots", "deferrable"} & set(args.modes):
            cluster.start("worker", SLUICE_WORKER_CONCURRENCY=str(args.slots))
        try:
            if "execution" in args.modes:
                start_pod_worker(cluster, root, kube)
            await wait_ready(cluster)
            results = [await execution_mode(cluster, v1, args.count) if mode == "execution"
                       else await one_mode(cluster, mode, args.count) for mode in args.modes]
        finally:
            cluster.stop_all()
            delete_bench_pods(v1)
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
                shutil.copytree(cluster.root, args.logs, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("airflow.db*", "*.cfg"))
    return results, services


async def bench(args: argparse.Namespace, root: Path) -> str:
    was_up = cluster_script("status", timeout=60).returncode == 0
    if not was_up:
        up = cluster_script("up")
        if up.returncode != 0:
            raise SystemExit(f"deploy/k8s/cluster.sh up failed:\n{up.stderr[-3000:]}")
    info = machine()
    try:
        results, services = await run_modes(args, root, cluster_env())
        status = cluster_script("status", timeout=60).stdout
    finally:
        if not was_up:
            cluster_script("down", timeout=300)
    for r in results:
        print(json.dumps(r), file=sys.stderr)
    return render(args, info, services, results, status)


def render(args: argparse.Namespace, info: dict[str, str], services: str, results: list[dict],
           status: str) -> str:
    lines = [f"\n## Kubernetes pods: {datetime.now().strftime('%Y-%m-%d %H:%M')} UTC, commit "
             f"{info['commit']}\n",
             machine_lines(info, services),
             f"- {args.count} mapped instances per mode; KubernetesPodOperator modes in "
             f"{args.slots} worker slots or the triggerer, execution mode in one "
             "Kubernetes-mode worker",
             "- cluster: deploy/k8s/cluster.sh, Kubernetes 1.20.2, one node, 2 CPUs, kubelet "
             "--max-pods 110, pods start one at a time through dockershim\n",
             "| mode | end to end | overhead p50 | p95 | max | most at once |",
             "|---|---|---|---|---|---|"]
    for r in results:
        o = r["overhead_s"]
        at_once = r.get("most_running_at_once", r.get("most_deferred_at_once"))
        lines.append(f"| {r['mode']} | {r['end_to_end_s']} s | {o['p50']} s | {o['p95']} s | "
                     f"{o['max']} s | {at_once} |")
    for r in results:
        if r["mode"] == "execution":
            lines += execution_lines(r)
    lines += ["", "```", status.strip(), "```", ""]
    return "\n".join(lines)


def execution_lines(r: dict) -> list[str]:
    lines = ["", "Execution mode, each try's stages (s; one watch of the pods):",
             "", "| stage | p50 | p95 | max |", "|---|---|---|---|"]
    for key, s in r["stages_s"].items():
        lines.append(f"| {STAGES[key]} | {s['p50']} | {s['p95']} | {s['max']} |")
    rss = r["worker_rss_mib"]
    lines += ["", f"- Kubernetes-mode worker RSS: {rss['at_most']:.0f} MiB when most ran, "
              f"{rss['max']:.0f} MiB at most; pods at once: {r['most_pods_at_once']} existing, "
              f"{r['most_pods_running_at_once']} Running",
              f"- pods left {LEFT_AFTER_S} s after the run: {r['pods_left_after_run']} of "
              f"{r['pods_seen']} ({r['pods_never_deleted']} never asked to be deleted); the last "
              f"deleted {r['last_deleted_after_run_s']} s after the run; the worker's warnings: "
              f"{json.dumps(r['worker_warnings']) if r['worker_warnings'] else 'none'}",
              f"- pods the scheduler left pending: "
              f"{json.dumps(r['unschedulable']) if r['unschedulable'] else 'none'}"]
    return lines


def modes(text: str) -> list[str]:
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = set(chosen) - set(MODES)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(MODES)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--modes", type=modes, default=list(MODES),
                        help=f"comma-separated, of {', '.join(MODES)} (default: all)")
    parser.add_argument("--logs", type=Path, help="copy the daemons' logs into this folder")
    add_output_args(parser)
    return run_scenario(bench, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
