"""The seed pattern on Kubernetes: discover work at run time, train each config in its own pod.

``discover`` returns 8 configs; ``train`` is Airflow's unmodified ``KubernetesPodOperator``
mapped over them with ``partial`` / ``expand``: each instance runs a pod of the
cluster's local python3 image under a memory limit, its log in the instance's try
log, its result written to ``/airflow/xcom/return.json`` and read back through the
provider's xcom sidecar. Config 5 allocates past its limit: its pod is OOMKilled
(exit 137), retried once, then fails; ``pick_best`` (``all_done``) reduces the 7
results. Two DAGs: ``k8s_train`` waits for its pods in a worker slot,
``k8s_train_deferrable`` waits in the triggerer (``KubernetesPodTrigger``).
"""

from __future__ import annotations

import json
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


def _train_dag(dag_id: str, *, deferrable: bool, train_secs: int) -> None:
    @dag(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         catchup=False, tags=["kubernetes"])
    def train_dag():
        @task
        def discover() -> list[list[str]]:
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

        @task(trigger_rule="all_done")
        def pick_best(results) -> dict:
            results = list(results)
            best = min(results, key=lambda r: r["loss"])
            return {"n": len(results), "best_id": best["id"],
                    "ids": sorted(r["id"] for r in results)}

        pick_best(train.output)

    train_dag()


_train_dag("k8s_train", deferrable=False, train_secs=0)
_train_dag("k8s_train_deferrable", deferrable=True, train_secs=10)
