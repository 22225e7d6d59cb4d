"""``@task.kubernetes``, mapped: each instance's function runs in a pod of the local python3 image.

The provider ships the function's source and its arguments into the pod; its return value
comes back through the xcom sidecar as the instance's XCom, and ``total`` sums them.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

IMAGE = "sluice-k8s/python:bookworm"


@dag(dag_id="k8s_task_decorator", schedule=None,
     start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["kubernetes"])
def k8s_task_decorator():
    @task
    def numbers() -> list[int]:
        return [2, 3, 4]

    @task.kubernetes(image=IMAGE, image_pull_policy="Never", namespace="default",
                     do_xcom_push=True, get_logs=True, on_finish_action="delete_pod",
                     labels={"app": "sluice-k8s-e2e", "sluice-dag": "k8s_task_decorator"})
    def square(x: int) -> dict:
        import platform

        print(f"squaring {x} on python {platform.python_version()}")
        return {"x": x, "square": x * x}

    @task
    def total(results) -> int:
        return sum(r["square"] for r in results)

    total(square.expand(x=numbers()))


k8s_task_decorator()
