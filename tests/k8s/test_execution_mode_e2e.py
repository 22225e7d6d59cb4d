"""Sluice's Kubernetes execution mode on the real cluster: a pod per try, the Task SDK inside.

Two workers run beside the scheduler and the triggerer: a local one (slots: the
``KubernetesPodOperator`` instances) and a Kubernetes-mode one
(``SLUICE_WORKER_EXECUTOR=kubernetes``), which runs every try of the ``kubernetes``
queue -- the tasks with ``executor="KubernetesExecutor"`` -- in a pod of its own. The
pods run ``python -m worker.pod_task`` from this checkout's interpreter and packages,
mounted read-only from the host (the cluster has no registry), and call the
Kubernetes-mode worker's Execution API over the pods' bridge network. They hold no
credentials but their try's token.

``k8s_train_pods`` is the seed DAG (``dags/kpo_train.py``) whose plain ``@task``s run
in pods shaped by their ``pod_override``; ``k8s_pod_lost``'s first pod is deleted
mid-run and its try retried in a new pod.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
from pathlib import Path

import anyio
import pytest

from tests.cluster import Cluster, task_log, wait_for
from tests.k8s.conftest import LABEL, Kube, delete_test_pods, sluice_on_the_cluster
from tests.k8s.test_kpo_e2e import assert_seed_pattern_outcome, run_train

pytestmark = pytest.mark.timeout(1800)

ROOT = Path(__file__).resolve().parents[2]
POD_WORKER = "pod-worker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def pod_template(path: Path, kube: Kube, dags: Path) -> Path:
    """The pods' template: the cluster's python image running this checkout's interpreter,
    packages and DAG files, mounted read-only at their own paths."""
    mounts = {Path(sys.base_prefix).resolve(), ROOT, dags}
    if not Path(sys.prefix).resolve().is_relative_to(ROOT):
        mounts.add(Path(sys.prefix).resolve())
    volumes = [{"name": f"host-{i}", "hostPath": {"path": str(p), "type": "Directory"}}
               for i, p in enumerate(sorted(mounts))]
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"app": "sluice-k8s-e2e"}},
        "spec": {
            "containers": [{
                "name": "base", "image": kube.python_image, "imagePullPolicy": "Never",
                "command": [sys.executable, "-m", "worker.pod_task"],
                "env": [{"name": "PYTHONPATH", "value": str(ROOT)},
                        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                        {"name": "AIRFLOW_HOME", "value": "/tmp/airflow"}],
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                "volumeMounts": [{"name": v["name"], "mountPath": v["hostPath"]["path"],
                                  "readOnly": True} for v in volumes]}],
            "volumes": volumes}}
    path.write_text(json.dumps(pod, indent=2))
    return path


@pytest.fixture(scope="module")
async def pods(kube: Kube, services, template_db, tmp_path_factory):
    root = tmp_path_factory.mktemp("k8s-mode")
    async with sluice_on_the_cluster(kube, services, template_db, root) as cluster:
        port = free_port()
        cluster.pod_worker_env = dict(
            SLUICE_WORKER_EXECUTOR="kubernetes", SLUICE_KUBERNETES_CONFIG=str(kube.kubeconfig),
            SLUICE_KUBERNETES_POD_TEMPLATE=str(pod_template(root / "pod.json", kube,
                                                            root / "dags")),
            SLUICE_EXECUTION_API_HOST="0.0.0.0", SLUICE_EXECUTION_API_PORT=str(port),
            SLUICE_KUBERNETES_API_URL=f"http://{kube.host_address}:{port}/",
            SLUICE_KUBERNETES_PENDING_TIMEOUT_S="240", SLUICE_KUBERNETES_ORPHAN_AFTER_S="6")
        cluster.start("scheduler")
        cluster.start("triggerer")
        cluster.start("worker", SLUICE_WORKER_CONCURRENCY="3")
        cluster.start("worker", POD_WORKER, **cluster.pod_worker_env)
        yield cluster


async def where(cluster: Cluster, run_id: str, task_id: str) -> dict:
    """The pod a plain task said it ran in (its ``where`` XCom)."""
    conn = await cluster.connect()
    try:
        raw = await conn.fetchval(
            "SELECT x.value FROM xcom x JOIN dag_run r ON r.id = x.run_pk "
            "WHERE r.run_id = $1 AND x.task_id = $2 AND x.key = 'where'", run_id, task_id)
    finally:
        await conn.close()
    assert raw is not None, f"{task_id} pushed no 'where'"
    return json.loads(raw) if isinstance(raw, str) else raw


async def test_the_seed_dags_plain_tasks_run_each_in_its_own_pod(pods, kube):
    doc = await run_train(pods, "k8s_train_pods")
    assert_seed_pattern_outcome(pods, doc)
    seen = {t: await where(pods, doc["run_id"], t) for t in ("discover", "pick_best")}
    names = {w["pod"] for w in seen.values()}
    assert len(names) == 2 and all(n.startswith("sluice-k8s-train-pods-") for n in names), seen
    # the pod_override's env, label and memory limit (read through the downward API)
    assert all(w["team"] == "ml" and w["memory_limit"] == str(768 * 1024 * 1024)
               for w in seen.values()), seen
    # each try's log on the worker's machine: the pod's life and the SDK's own lines (the
    # pod's end is written once the pod is seen to end, maybe after the run's)
    for task_id in ("discover", "pick_best"):
        async def complete(task_id=task_id) -> bool:
            return "ended: success" in task_log(pods, doc, task_id)

        await wait_for(complete, 60, f"{task_id}'s log to say how its pod ended")
        text = task_log(pods, doc, task_id)
        assert "Pod sluice-k8s-train-pods-" in text and "Done. Returned value was" in text, \
            text[-3000:]
    # the pods are deleted once their tries' outcomes are in
    def left() -> list[str]:
        return [p.metadata.name for p in kube.core_v1().list_namespaced_pod(
            "default", label_selector="sluice.dev/worker,dag_id=k8s_train_pods").items
            if p.metadata.deletion_timestamp is None]

    async def all_deleted() -> bool:
        return not await anyio.to_thread.run_sync(left)

    await wait_for(all_deleted, 60, "the execution mode's pods to be deleted")
    delete_test_pods(kube)


async def first_try_running(cluster: Cluster, kube: Kube, run_id: str) -> str:
    """Wait until long_step's first try runs its body in a pod; that pod's name."""
    v1 = kube.core_v1()
    first: dict = {}

    def running_first_pod() -> bool:
        for p in v1.list_namespaced_pod("default", label_selector=(
                f"{LABEL},dag_id=k8s_pod_lost,try_number=1")).items:
            if (p.status.phase == "Running" and p.metadata.annotations["run_id"] == run_id
                    and p.metadata.deletion_timestamp is None):
                first["name"] = p.metadata.name
                return True
        return False

    async def body_running() -> bool:
        if not await anyio.to_thread.run_sync(running_first_pod):
            return False
        doc = await cluster.run_doc(run_id)
        return "first try: running until its pod is deleted" in task_log(cluster, doc, "long_step")

    await wait_for(body_running, 300, "long_step's first try to run in its pod")
    return first["name"]


def assert_retried_in_a_new_pod(doc: dict, first: str) -> None:
    step = Cluster.by_task(doc)["long_step"]
    assert (doc["state"], step["state"], step["try_number"]) == ("success", "success", 2), doc
    assert step["return_value"]["try"] == 2
    assert step["return_value"]["pod"] != first


async def test_a_pod_deleted_mid_run_is_retried_in_a_new_pod(pods, kube):
    run_id = await pods.trigger("k8s_pod_lost")
    first = await first_try_running(pods, kube, run_id)
    await anyio.to_thread.run_sync(lambda: kube.core_v1().delete_namespaced_pod(
        first, "default", grace_period_seconds=1))
    doc = await pods.wait_run(run_id, timeout=300)
    assert_retried_in_a_new_pod(doc, first)
    lost = task_log(pods, doc, "long_step", attempt=1)
    assert f"pod {first} was deleted before its try ended" in lost, lost[-3000:]
    delete_test_pods(kube)


async def test_a_dead_workers_try_is_retried_and_its_orphan_pod_deleted(pods, kube):
    """The Kubernetes-mode worker is SIGKILLed while its pod runs a try: the scheduler fails
    the try (no heartbeat), a new worker runs the retry in a new pod and deletes the orphan."""
    run_id = await pods.trigger("k8s_pod_lost")
    first = await first_try_running(pods, kube, run_id)
    pods.signal(POD_WORKER, signal.SIGKILL)
    pods.stop(POD_WORKER)
    pods.start("worker", POD_WORKER, **pods.pod_worker_env)
    doc = await pods.wait_run(run_id, timeout=300)
    assert_retried_in_a_new_pod(doc, first)

    def orphan_left() -> bool:
        return any(p.metadata.name == first and p.metadata.deletion_timestamp is None
                   for p in kube.core_v1().list_namespaced_pod(
                       "default", label_selector="dag_id=k8s_pod_lost").items)

    async def orphan_deleted() -> bool:
        return not await anyio.to_thread.run_sync(orphan_left)

    await wait_for(orphan_deleted, 120, f"the orphan pod {first} to be deleted")
    assert "orphan_pod_deleted" in pods.log(POD_WORKER)
    delete_test_pods(kube)


async def test_a_mapped_deferral_leaves_its_pod_and_resumes_in_a_new_one(pods, kube):
    run_id = await pods.trigger("k8s_pod_deferral")
    doc = await pods.wait_run(run_id, timeout=300)
    assert doc["state"] == "success", doc
    waits = {t["map_index"]: t for t in doc["tasks"] if t["task_id"] == "wait"}
    assert sorted(waits) == [0, 1], doc
    for i, ti in waits.items():
        value = ti["return_value"]
        assert value["item"] == i + 1 and ti["try_number"] == 1, ti
        assert value["first_pod"].startswith("sluice-k8s-pod-deferral-wait-") and \
            value["resumed_in"].startswith("sluice-k8s-pod-deferral-wait-"), value
        assert value["first_pod"] != value["resumed_in"], value

        async def both_legs(i=i, value=value) -> bool:
            text = task_log(pods, doc, "wait", map_index=i)
            return all(f"Pod {p} ended" in text for p in (value["first_pod"], value["resumed_in"]))

        await wait_for(both_legs, 60, f"wait[{i}]'s log to hold both its pods")
    delete_test_pods(kube)
