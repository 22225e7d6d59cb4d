"""The serialized DAG: what the scheduler knows of a DAG without running its code.

Built in the parse server from the ``airflow.sdk`` DAGs Airflow's DagBag loads
(``shared.airflow_spec``), stored as JSON in ``dag.serialized`` and validated
by these models when read back. The pure rules the walk uses (effective
priority weights, retry fields, seconds) are here, with the models they fill.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from shared.state.retry import RetryPolicy


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class TaskSpec(_Model):
    task_id: str
    operator: str
    upstream: list[str]
    downstream: list[str]
    trigger_rule: str = "all_success"
    retries: int = 0
    retry_delay_s: float = 300.0
    retry_backoff: float = 0.0
    max_retry_delay_s: float | None = None
    execution_timeout_s: float | None = None
    queue: str = "default"
    pod_override: dict[str, Any] | None = None  # executor_config["pod_override"], as Pod JSON
    pool: str = "default_pool"
    pool_slots: int = 1
    priority_weight: int = 1
    max_active_tis_per_dag: int | None = None
    max_active_tis_per_dagrun: int | None = None
    is_empty: bool = False
    group_id: str | None = None
    mapped: dict[str, Any] | None = None
    mapped_group: str | None = None  # the mapped task group this task expands with
    start_trigger: dict[str, Any] | None = None
    # Airflow's own facts of the task (the Task SDK's parser fills them)
    is_setup: bool = False
    is_teardown: bool = False
    on_failure_fail_dagrun: bool = False
    # waiting on the previous run (Airflow's PrevDagrunDep; scheduler/past.py)
    depends_on_past: bool = False
    wait_for_downstream: bool = False
    ignore_first_depends_on_past: bool = False
    start_date: datetime | None = None  # the task's own, which may differ from the DAG's
    callbacks: list[str] = []  # the on_*_callback names the task has
    inlets: list[dict[str, Any]] = []
    outlets: list[dict[str, Any]] = []

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.retries, self.retry_delay_s, self.retry_backoff,
                           self.max_retry_delay_s)


class DagSpec(_Model):
    dag_id: str
    fileloc: str
    description: str | None = None
    schedule: dict[str, Any] | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    catchup: bool = False
    max_active_runs: int = 16
    max_active_tasks: int = 16
    dagrun_timeout_s: float | None = None
    is_paused_upon_creation: bool | None = None
    params: dict[str, Any] = {}
    param_schemas: dict[str, dict[str, Any]] = {}  # Param name -> schema/description/required
    tags: list[str] = []
    callbacks: list[str] = []  # the DAG's on_success/on_failure_callback names it has
    tasks: list[TaskSpec]

    def task(self, task_id: str) -> TaskSpec:
        return self.task_map[task_id]

    @property
    def task_map(self) -> dict[str, TaskSpec]:
        cached = self.__dict__.get("_task_map")
        if cached is None:
            cached = {t.task_id: t for t in self.tasks}
            object.__setattr__(self, "__dict__", {**self.__dict__, "_task_map": cached})
        return cached


def _seconds(delta: Any) -> float | None:
    return None if delta is None else delta.total_seconds()


def _as_delta(value: Any) -> timedelta | None:
    """``dagrun_timeout`` as Airflow takes it: a timedelta (or seconds)."""
    if value is None or isinstance(value, timedelta):
        return value
    return timedelta(seconds=float(value))


def _retry_fields(policy: RetryPolicy) -> dict[str, Any]:
    """The task's retry settings as :meth:`TaskSpec.retry_policy` reads them back."""
    return {"retries": policy.retries, "retry_delay_s": policy.retry_delay_s,
            "retry_backoff": policy.backoff, "max_retry_delay_s": policy.max_retry_delay_s}


def _downstream_weights(dag: Any) -> dict[str, int]:
    """Each task's effective priority by its ``weight_rule``, as Airflow computes it.

    ``downstream`` (the default): own weight plus every downstream task's;
    ``upstream``: own plus every upstream task's; ``absolute``: its own. The
    tasks reachable from each one are bit sets filled in topological order, so
    a chain of thousands of tasks needs neither recursion nor a set per task.
    """
    ids = list(dag.task_dict)
    bit = {tid: 1 << i for i, tid in enumerate(ids)}
    weights = [dag.task_dict[tid].priority_weight for tid in ids]
    uniform = len(set(weights)) <= 1
    order = _topological(dag)

    def reach(direction: str) -> dict[str, int]:
        edges = "downstream_task_ids" if direction == "downstream" else "upstream_task_ids"
        masks: dict[str, int] = {}
        for tid in (reversed(order) if direction == "downstream" else order):
            mask = 0
            for other in getattr(dag.task_dict[tid], edges):
                mask |= bit[other] | masks[other]
            masks[tid] = mask
        return masks

    def total(mask: int) -> int:
        if uniform:
            return (weights[0] if weights else 0) * mask.bit_count()
        return sum(w for i, w in enumerate(weights) if mask >> i & 1)

    rules = {tid: getattr(t, "weight_rule", "downstream") for tid, t in dag.task_dict.items()}
    masks = {rule: reach(rule) for rule in set(rules.values()) - {"absolute"}}
    return {tid: dag.task_dict[tid].priority_weight
            + (0 if rule == "absolute" else total(masks[rule][tid]))
            for tid, rule in rules.items()}


def _topological(dag: Any) -> list[str]:
    """Task ids, every task after its upstreams (Airflow's DagBag has refused cycles)."""
    waiting = {tid: len(t.upstream_task_ids) for tid, t in dag.task_dict.items()}
    ready = [tid for tid, n in waiting.items() if n == 0]
    order: list[str] = []
    while ready:
        tid = ready.pop()
        order.append(tid)
        for d in dag.task_dict[tid].downstream_task_ids:
            waiting[d] -= 1
            if waiting[d] == 0:
                ready.append(d)
    if len(order) != len(waiting):
        raise ValueError(f"DAG {dag.dag_id!r} has a cycle")
    return order
