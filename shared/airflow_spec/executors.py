"""Which executor a task asks for, as Sluice routes it: a queue, and a pod override.

Airflow 3 lets a task name its executor (``executor="KubernetesExecutor"``) and the
CeleryKubernetesExecutor sends a task whose ``queue`` is ``kubernetes`` to pods. Sluice
has one rule for both: a task whose executor is Kubernetes' goes to the
``kubernetes`` queue, which Kubernetes-mode workers read (worker.kubernetes); any
other executor name keeps the task's own queue. ``executor_config["pod_override"]``
(a ``kubernetes.client.V1Pod`` or its dict) is stored as the Pod's JSON, for the
worker to lay over its pod template as Airflow's ``PodGenerator`` does.
"""

from __future__ import annotations

from typing import Any

from shared.airflow_spec.errors import SpecError
from shared.config import KUBERNETES_QUEUE

_KUBERNETES_NAMES = {"kubernetes", "KubernetesExecutor"}


def is_kubernetes(executor: str | None) -> bool:
    """``KubernetesExecutor``, its module path or an ``alias:path`` naming it."""
    if not executor:
        return False
    name = str(executor).rpartition(":")[2].rpartition(".")[2]
    return name in _KUBERNETES_NAMES


def task_queue(task: Any) -> str:
    return KUBERNETES_QUEUE if is_kubernetes(getattr(task, "executor", None)) else task.queue


def pod_override(task: Any, where: str) -> dict[str, Any] | None:
    """The task's ``executor_config["pod_override"]`` as Pod JSON, or ``None``."""
    config = getattr(task, "executor_config", None) or {}
    if not isinstance(config, dict):
        raise SpecError(f"{where}: executor_config must be a dict, not {type(config).__name__}")
    pod = config.get("pod_override")
    if pod is None:
        return None
    if isinstance(pod, dict):
        return pod
    if hasattr(pod, "openapi_types"):  # a kubernetes.client model
        from kubernetes.client import ApiClient

        return ApiClient().sanitize_for_serialization(pod)
    raise SpecError(f"{where}: executor_config['pod_override'] must be a kubernetes.client.V1Pod "
                    f"or a dict, not {type(pod).__name__}")
