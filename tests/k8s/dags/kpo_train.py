"""The seed pattern on Kubernetes: discover work at run time, train each config in its own pod.

``discover`` returns 8 configs; ``train`` is Airflow's unmodified ``KubernetesPodOperator``
mapped over them with ``partial`` / ``expand``: each instance runs a pod of the
cluster's local python3 image under a memory limit, its log in the instance's try
log, its result written to ``/airflow/xcom/return.json`` and read back through the
provider's xcom sidecar. Config 5 allocates past its limit: its pod is OOMKilled
(exit 137), retried once, then fails; ``pick_best`` (``all_done``) reduces the 7
results. Three DAGs: ``k8s_train`` waits for its pods in a worker slot,
``k8s_train_deferrable`` waits in the triggerer (``KubernetesPodTrigger``), and
``k8s_train_pods`` is ``k8s_train`` whose plain ``@task``s run in Sluice's Kubernetes
execution mode (``executor="KubernetesExecutor"``), each in a pod of its own whose
``pod_override`` adds a label, an environment variable and a memory limit.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pendulum
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import dag, task
from kubernetes.client import models as k8s

IMAGE = "sluice-k8s/python:bookworm"
OOM_CONFIG = 5
MEMORY_LIMIT = "128Mi"

# sys.argv: ["-c", "--config", "<json>"]; the result is what the sidecar hands back as XCom
TRAIN = """
import json, os, sys, time
cfg = json.loads(sys.argv[2])
print(f"training config {cfg['id']} lr={cfg['lr']} with {cfg['mem_mb']} MB", flush=True)
ballast = b"x" * (cfg["mem_mb"] * 1024 * 1024)
time.sleep(float(os.environ.get("TRAIN_SECS", "0")))
loss = round((cfg["lr"] - 0.03) ** 2 + 0.01 * cfg["id"], 6)
os.makedirs("/airflow/xcom", exist_ok=True)
with open("/airflow/xcom/return.json", "w") as f:
    json.dump({"id": cfg["id"], "lr": cfg["lr"], "loss": loss, "pod": os.environ["HOSTNAME"]}, f)
print(f"config {cfg['id']} loss={loss}", flush=True)
"""


# what a plain task's pod_override adds in the execution mode: read back by the tasks
POD_OVERRIDE = k8s.V1Pod(
    metadata=k8s.V1ObjectMeta(labels={"team": "ml"}),
    spec=k8s.V1PodSpec(containers=[k8s.V1Container(
        name="base",
        env=[k8s.V1EnvVar(name="TEAM", value="ml"),
             k8s.V1EnvVar(name="MEMORY_LIMIT", value_from=k8s.V1EnvVarSource(
                 resource_field_ref=k8s.V1ResourceFieldSelector(
                     container_name="base", resource="limits.memory")))],
        resources=k8s.V1ResourceRequirements(limits={"memory": "768Mi"}))]))


def _where() -> dict:
    """The pod a plain task ran in, as its pod_override shaped it (nothing outside a pod)."""
    return {"pod": os.environ.get("HOSTNAME"), "team": os.environ.get("TEAM"),
            "memory_limit": os.environ.get("MEMORY_LIMIT")}


def _train_dag(dag_id: str, *, deferrable: bool, train_secs: int, plain_in_pods: bool = False) -> None:
    in_pods = ({"executor": "KubernetesExecutor", "executor_config": {"pod_override": POD_OVERRIDE}}
               if plain_in_pods else {})

    @dag(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         catchup=False, tags=["kubernetes"])
    def train_dag():
        @task(**in_pods)
        def discover(ti=None) -> list[list[str]]:
            if plain_in_pods:
                ti.xcom_push(key="where", value=_where())
            configs = [{"id": i, "lr": round(0.01 * (i + 1), 3),
                        "mem_mb": 400 if i == OOM_CONFIG else 8} for i in range(8)]
            return [["--config", json.dumps(c)] for c in configs]

        train = KubernetesPodOperator.partial(
            task_id="train",
            name="train",
            namespace="default",
            image=IMAGE,
            image_pull_policy="Never",
            cmds=["python3", "-c", TRAIN],
            env_vars={"TRAIN_SECS": str(train_secs)},
            labels={"app": "sluice-k8s-e2e", "sluice-dag": dag_id},
            container_resources=k8s.V1ResourceRequirements(
                requests={"memory": "32Mi", "cpu": "50m"}, limits={"memory": MEMORY_LIMIT}),
            get_logs=True,
            do_xcom_push=True,
            retries=1,
            retry_delay=timedelta(seconds=1),
            on_finish_action="delete_succeeded_pod",
            log_events_on_failure=True,
            deferrable=deferrable,
            poll_interval=1,
            startup_timeout_seconds=240,
        ).expand(arguments=discover())

        @task(trigger_rule="all_done", **in_pods)
        def pick_best(results, ti=None) -> dict:
            if plain_in_pods:
                ti.xcom_push(key="where", value=_where())
            results = list(results)
            best = min(results, key=lambda r: r["loss"])
            return {"n": len(results), "best_id": best["id"],
                    "ids": sorted(r["id"] for r in results)}

        pick_best(train.output)

    train_dag()


_train_dag("k8s_train", deferrable=False, train_secs=0)
_train_dag("k8s_train_deferrable", deferrable=True, train_secs=10)
_train_dag("k8s_train_pods", deferrable=False, train_secs=0, plain_in_pods=True)
