"""Airflow's KubernetesPodOperator, mapped, on Sluice's real daemons and a real Kubernetes cluster.

``dags/kpo_train.py`` is the seed pattern: ``discover`` returns 8 configs, an unmodified
``KubernetesPodOperator.partial(...).expand(arguments=...)`` trains each in a pod of
the cluster's local python3 image under a 128Mi memory limit, and ``pick_best``
(``all_done``) reduces their XCom results. Config 5 allocates 400 MB: its pod is
OOMKilled, the try fails with exit 137 in its log, the retry does the same, and
``pick_best`` gets the other 7 results.

The cluster is deploy/k8s/cluster.sh (the ``kube`` fixture); Sluice's scheduler,
worker and triggerer run as processes. The kubeconfig reaches the operator through
the ``kubernetes_default`` connection, made with ``sluice connections add``: the
worker's slots hold no cluster credentials of their own. ``k8s_train`` waits for
its pods in worker slots; ``k8s_train_deferrable`` hands each wait to
``KubernetesPodTrigger`` in the triggerer, so more pods run at once than the worker
has slots. ``dags/task_kubernetes.py`` maps a ``@task.kubernetes`` function over a list.
"""

from __future__ import annotations

import signal

import anyio
import pytest

from tests.cluster import Cluster, wait_for
from tests.k8s.conftest import LABEL, Kube, delete_test_pods, sluice_on_the_cluster

# the session's cluster may be built and started by the first test
pytestmark = pytest.mark.timeout(1800)

RUN_TIMEOUT_S = 600.0
OOM_CONFIG = 5
WORKER_SLOTS = 3


def expected_loss(i: int) -> float:
    lr = round(0.01 * (i + 1), 3)
    return round((lr - 0.03) ** 2 + 0.01 * i, 6)


@pytest.fixture(scope="module")
async def kpo(kube: Kube, services, template_db, tmp_path_factory):
    """Sluice's daemons over dags/, the operator reaching the cluster by ``kubernetes_default``."""
    async with sluice_on_the_cluster(kube, services, template_db,
                                     tmp_path_factory.mktemp("k8s")) as cluster:
        cluster.start("scheduler")
        cluster.start("triggerer")
        cluster.start("worker", SLUICE_WORKER_CONCURRENCY=str(WORKER_SLOTS))
        yield cluster


def try_log(cluster: Cluster, doc: dict, map_index: int, attempt: int) -> str:
    path = (cluster.root / "home" / "logs" / f"dag_id={doc['dag_id']}" / f"run_id={doc['run_id']}"
            / "task_id=train" / f"map_index={map_index}" / f"attempt={attempt}.log")
    return path.read_text()


async def run_train(cluster: Cluster, dag_id: str, watch=None) -> dict:
    """Trigger ``dag_id`` and wait for its run; ``watch`` polls the database meanwhile."""
    run_id = await cluster.trigger(dag_id)
    if watch is None:
        return await cluster.wait_run(run_id, timeout=RUN_TIMEOUT_S)
    doc = None

    async def finished():
        nonlocal doc
        await watch(run_id)
        doc = await cluster.run_doc(run_id)
        return doc["state"] in ("success", "failed")

    await wait_for(finished, RUN_TIMEOUT_S, f"run {run_id} of {dag_id}")
    return doc


def assert_seed_pattern_outcome(cluster: Cluster, doc: dict) -> None:
    """8 pods trained, config 5 OOMKilled twice (exit 137 in both tries' logs), 7 results reduced."""
    trains = {t["map_index"]: t for t in doc["tasks"] if t["task_id"] == "train"}
    assert sorted(trains) == list(range(8)), trains
    states = {i: (t["state"], t["try_number"]) for i, t in trains.items()}
    assert states == {i: ("failed", 2) if i == OOM_CONFIG else ("success", 1)
                      for i in range(8)}, states
    for i, t in trains.items():
        if i != OOM_CONFIG:
            assert t["return_value"]["id"] == i
            assert t["return_value"]["loss"] == expected_loss(i)
            assert t["return_value"]["pod"].startswith("train-"), t["return_value"]
    ok_ids = [i for i in range(8) if i != OOM_CONFIG]
    best = Cluster.by_task(doc)["pick_best"]
    assert best["state"] == "success", doc
    assert best["return_value"] == {"n": 7, "ids": ok_ids,
                                    "best_id": min(ok_ids, key=expected_loss)}
    assert doc["state"] == "success", doc  # pick_best, the only leaf, succeeded
    # the pod's own output is in the instance's try log
    log0 = try_log(cluster, doc, 0, 1)
    assert "training config 0 lr=0.01 with 8 MB" in log0, log0[-3000:]
    assert f"config 0 loss={expected_loss(0)}" in log0, log0[-3000:]
    # the OOMKilled pod fails each try with its exit code and reason in the try's log
    for attempt in (1, 2):
        text = try_log(cluster, doc, OOM_CONFIG, attempt)
        assert "Container 'base': state='TERMINATED', reason='OOMKilled', exit_code=137" in text, \
            text[-3000:]


def pods_left(kube: Kube, dag_id: str) -> list:
    """The run's pods not being deleted (a deleted pod is listed until its kubelet stops it)."""
    pods = kube.core_v1().list_namespaced_pod(
        "default", label_selector=f"{LABEL},sluice-dag={dag_id}").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


async def assert_only_oom_pods_left(kube: Kube, dag_id: str) -> None:
    """on_finish_action=delete_succeeded_pod: the OOMKilled tries' two pods are kept."""
    expected = [(str(OOM_CONFIG), "1"), (str(OOM_CONFIG), "2")]

    def left() -> list[tuple[str, str]]:
        return sorted((p.metadata.labels["map_index"], p.metadata.labels["try_number"])
                      for p in pods_left(kube, dag_id))

    async def only_oom() -> bool:
        return await anyio.to_thread.run_sync(left) == expected

    await wait_for(only_oom, 120, f"only {expected} of {dag_id}'s pods to be left")
    for pod in pods_left(kube, dag_id):
        base = next(s for s in pod.status.container_statuses if s.name == "base")
        term = base.state.terminated
        assert (term.reason, term.exit_code) == ("OOMKilled", 137), term
        limits = pod.spec.containers[0].resources.limits
        assert limits["memory"] == "128Mi", limits


async def deferred_trains(cluster: Cluster, run_id: str) -> int:
    """How many ``train`` instances of the run wait in the triggerer now."""
    conn = await cluster.connect()
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM task_instance ti JOIN dag_run r ON r.id = ti.run_pk "
            "WHERE r.run_id = $1 AND ti.task_id = 'train' AND ti.state = 'deferred'", run_id)
    finally:
        await conn.close()


# --- tests ---------------------------------------------------------------------------------
async def test_mapped_pods_train_and_the_oom_config_fails_after_its_retry(kpo, kube):
    doc = await run_train(kpo, "k8s_train")
    assert_seed_pattern_outcome(kpo, doc)
    await assert_only_oom_pods_left(kube, doc["dag_id"])
    delete_test_pods(kube)


async def test_deferrable_pods_wait_in_the_triggerer_holding_no_worker_slot(kpo, kube):
    most = {"deferred": 0}

    async def count_deferred(run_id: str) -> None:
        most["deferred"] = max(most["deferred"], await deferred_trains(kpo, run_id))

    doc = await run_train(kpo, "k8s_train_deferrable", watch=count_deferred)
    assert_seed_pattern_outcome(kpo, doc)
    await assert_only_oom_pods_left(kube, doc["dag_id"])
    # every pod ran for 10 s while its instance waited in the triggerer: more instances
    # waited at once than the worker has slots
    assert most["deferred"] > WORKER_SLOTS, most
    delete_test_pods(kube)


async def test_task_kubernetes_functions_run_in_mapped_pods(kpo, kube):
    doc = await run_train(kpo, "k8s_task_decorator")
    squares = {t["map_index"]: t for t in doc["tasks"] if t["task_id"] == "square"}
    assert {i: (t["state"], t["return_value"]) for i, t in squares.items()} == {
        0: ("success", {"x": 2, "square": 4}), 1: ("success", {"x": 3, "square": 9}),
        2: ("success", {"x": 4, "square": 16})}, doc
    assert Cluster.by_task(doc)["total"]["return_value"] == 29
    assert doc["state"] == "success"
    log = (kpo.root / "home" / "logs" / f"dag_id={doc['dag_id']}" / f"run_id={doc['run_id']}"
           / "task_id=square" / "map_index=1" / "attempt=1.log").read_text()
    assert "squaring 3 on python 3.11" in log, log[-3000:]


async def test_deferred_pods_survive_a_triggerer_killed_mid_run(kpo, kube):
    """The triggerer is SIGKILLed while pods run and their instances wait in it; a new one
    takes the triggers over (re-created from their kwargs) and the run ends as it would have."""
    restarted = {"done": False}

    async def kill_once_deferred(run_id: str) -> None:
        if not restarted["done"] and await deferred_trains(kpo, run_id) >= 2:
            kpo.signal("triggerer", signal.SIGKILL)
            kpo.stop("triggerer")
            kpo.start("triggerer")
            restarted["done"] = True

    doc = await run_train(kpo, "k8s_train_deferrable", watch=kill_once_deferred)
    assert restarted["done"], "no instance was ever deferred"
    assert_seed_pattern_outcome(kpo, doc)
    delete_test_pods(kube)
