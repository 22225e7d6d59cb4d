"""A plain task in Sluice's Kubernetes execution mode whose first pod is deleted mid-run.

``long_step``'s first try waits (its log says so) until the test deletes its pod;
the try is lost, retried in a new pod, and the second try returns at once.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     tags=["kubernetes"])
def k8s_pod_lost():
    @task(executor="KubernetesExecutor", retries=1, retry_delay=timedelta(seconds=1))
    def long_step(ti=None) -> dict:
        if ti.try_number == 1:
            print("first try: running until its pod is deleted", flush=True)
            time.sleep(900)
        return {"try": ti.try_number, "pod": os.environ.get("HOSTNAME")}

    long_step()


k8s_pod_lost()
