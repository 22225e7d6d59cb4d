"""An ``airflow.sdk`` DAG walked into the document ``shared.serialization.DagSpec`` validates.

The pure rules (effective priority weights, retry fields, seconds) are
``shared.serialization``'s own. What Sluice's scheduler cannot decide from
fails here with one line naming the DAG, the task and the feature.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from shared.airflow_spec.assets import asset_fields
from shared.airflow_spec.errors import SpecError
from shared.airflow_spec.executors import pod_override, task_queue
from shared.airflow_spec.mapping import mapped_json, start_trigger_json
from shared.airflow_spec.timetables import schedule_json
from shared.serde import to_jsonable
from shared.serialization import (
    DagSpec,
    _as_delta,
    _downstream_weights,
    _retry_fields,
    _seconds,
)
from shared.state.retry import RetryPolicy

WEIGHT_RULES = ("downstream", "upstream", "absolute")
CALLBACKS = ("on_execute_callback", "on_failure_callback", "on_success_callback",
             "on_retry_callback", "on_skipped_callback")

#: The DAG callbacks Sluice's scheduler runs when a run ends (scheduler/callbacks.py).
DAG_CALLBACKS = ("on_success_callback", "on_failure_callback")

__all__ = ["dag_spec", "task_spec", "validated_spec"]


def validated_spec(dag: Any) -> DagSpec:
    return DagSpec.model_validate(dag_spec(dag))


def dag_spec(dag: Any) -> dict[str, Any]:
    """The scheduler's view of one ``airflow.sdk`` DAG (raises :class:`SpecError`)."""
    weights = _downstream_weights(_weight_view(dag))
    params = dag.params
    return storable({
        "dag_id": dag.dag_id,
        "fileloc": dag.fileloc,
        "description": dag.description,
        "schedule": schedule_json(dag),
        "start_date": _iso_utc(dag.start_date),
        "end_date": _iso_utc(dag.end_date),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "max_active_tasks": dag.max_active_tasks,
        "dagrun_timeout_s": _seconds(_as_delta(dag.dagrun_timeout)),
        "is_paused_upon_creation": dag.is_paused_upon_creation,
        "params": to_jsonable({k: _param_default(params, k) for k in params},
                              f"DAG {dag.dag_id!r} params"),
        "param_schemas": _param_schemas(params),
        "tags": sorted(dag.tags),
        **_dag_callbacks(dag),
        "tasks": [task_spec(t, weights[t.task_id], dag.dag_id) for t in dag.tasks],
        **asset_fields(dag),  # read from the stored document by scheduler.assets
    }, dag.dag_id)


def storable(doc: Any, dag_id: str, where: str = "") -> Any:
    """``doc``, refused (:class:`SpecError`) where PostgreSQL could not store it: a NaN or
    infinite number (not JSON) or a NUL character (not text) anywhere in it -- an asset's
    ``extra``, a watcher's kwargs, a name. Checked once here, so a DAG file cannot make
    the scheduler's store fail: it is that file's import error."""
    if isinstance(doc, float) and not math.isfinite(doc):
        raise SpecError(f"DAG {dag_id!r}: {where or 'value'} is {doc!r}, which JSON cannot hold")
    if isinstance(doc, str) and "\x00" in doc:
        raise SpecError(f"DAG {dag_id!r}: {where or 'value'} contains a NUL character")
    if isinstance(doc, dict):
        for k, v in doc.items():
            storable(k, dag_id, f"{where}[{k!r}]")
            storable(v, dag_id, f"{where}[{k!r}]")
    elif isinstance(doc, list | tuple):
        for i, v in enumerate(doc):
            storable(v, dag_id, f"{where}[{i}]")
    return doc


def _dag_callbacks(dag: Any) -> dict[str, list[str]]:
    """``{"callbacks": [...]}`` naming the DAG callbacks it has; nothing when it has none."""
    names = [n for n in DAG_CALLBACKS if getattr(dag, n, None)]
    return {"callbacks": names} if names else {}


def task_spec(task: Any, weight: int, dag_id: str) -> dict[str, Any]:
    group = task.task_group
    mapped_group = task.get_closest_mapped_task_group()
    where = f"DAG {dag_id!r}: task {task.task_id!r}"
    return {
        "task_id": task.task_id,
        "operator": task.operator_name,
        "upstream": sorted(task.upstream_task_ids),
        "downstream": sorted(task.downstream_task_ids),
        "trigger_rule": _text(task.trigger_rule),
        **_retry_fields(RetryPolicy.of_task(task)),
        "execution_timeout_s": _seconds(task.execution_timeout),
        "queue": task_queue(task),
        "pod_override": pod_override(task, where),
        "pool": task.pool,
        "pool_slots": task.pool_slots,
        "priority_weight": weight,
        "max_active_tis_per_dag": task.max_active_tis_per_dag,
        "max_active_tis_per_dagrun": task.max_active_tis_per_dagrun,
        "is_empty": _is_empty(task),
        "group_id": None if group is None or group.is_root else group.group_id,
        "mapped": mapped_json(task, mapped_group, where),
        "mapped_group": getattr(mapped_group, "group_id", None),
        "start_trigger": start_trigger_json(task, dag_id),
        "is_setup": bool(task.is_setup),
        "is_teardown": bool(task.is_teardown),
        "on_failure_fail_dagrun": bool(task.on_failure_fail_dagrun),
        **_past_fields(task),
        "callbacks": [name for name in CALLBACKS if _has_callback(task, name)],
        "inlets": _lineage(task.inlets),
        "outlets": _lineage(task.outlets),
    }


def _past_fields(task: Any) -> dict[str, Any]:
    """What the scheduler needs to make an instance wait on the previous run.

    ``wait_for_downstream`` implies ``depends_on_past``, as the SDK sets it.
    """
    return {"depends_on_past": bool(task.depends_on_past),
            "wait_for_downstream": bool(task.wait_for_downstream),
            "ignore_first_depends_on_past": bool(task.ignore_first_depends_on_past),
            "start_date": _iso_utc(task.start_date)}


def _text(value: Any) -> str:
    """An Airflow str-enum (``TriggerRule``, ``WeightRule``) or plain string as its value."""
    return str(getattr(value, "value", value))


def _iso_utc(value: datetime | None) -> str | None:
    """A DAG date as Sluice stores it: ISO text of the instant in UTC."""
    if value is None:
        return None
    v = value.astimezone(UTC)
    return datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond,
                    tzinfo=UTC).isoformat()


def _weight_view(dag: Any) -> SimpleNamespace:
    """The graph ``_downstream_weights`` reads, weight rules as plain names (custom ones refused)."""
    tasks = {}
    for tid, t in dag.task_dict.items():
        rule = _text(t.weight_rule)
        if rule not in WEIGHT_RULES:
            raise SpecError(f"DAG {dag.dag_id!r}: task {tid!r}: weight_rule {t.weight_rule!r} is "
                            f"not supported by Sluice (one of {', '.join(WEIGHT_RULES)})")
        tasks[tid] = SimpleNamespace(priority_weight=t.priority_weight, weight_rule=rule,
                                     upstream_task_ids=t.upstream_task_ids,
                                     downstream_task_ids=t.downstream_task_ids)
    return SimpleNamespace(dag_id=dag.dag_id, task_dict=tasks)


def _has_callback(task: Any, name: str) -> bool:
    return bool(getattr(task, f"has_{name}", None) or getattr(task, name, None))


def _is_empty(task: Any) -> bool:
    """Set to success without running, as Airflow's ``is_task_schedulable`` decides.

    An ``EmptyOperator`` with no execute or success callback and no inlets or outlets.
    """
    return bool(task.inherits_from_empty_operator
                and not _has_callback(task, "on_execute_callback")
                and not _has_callback(task, "on_success_callback")
                and not task.inlets and not task.outlets)


def _lineage(items: Any) -> list[dict[str, Any]]:
    """Inlets/outlets: assets and aliases by name, anything else by its type."""
    from airflow.sdk import Asset, AssetAlias

    out: list[dict[str, Any]] = []
    for item in items or ():
        if isinstance(item, Asset):
            out.append({"asset": {"name": item.name, "uri": item.uri, "group": item.group}})
        elif isinstance(item, AssetAlias):
            out.append({"asset_alias": {"name": item.name, "group": item.group}})
        else:
            out.append({"other": f"{type(item).__module__}.{type(item).__qualname__}"})
    return out


def _param_default(params: Any, key: str) -> Any:
    """A param's default; ``None`` when it has none (a run's conf must then give it)."""
    from airflow.sdk.definitions._internal.types import is_arg_set

    value = params.get_param(key).value
    return value if is_arg_set(value) else None


def _param_schemas(params: Any) -> dict[str, dict[str, Any]]:
    """Each ``Param`` with a JSON schema, a description or no default: what a run's conf is checked by."""
    from airflow.sdk.definitions._internal.types import is_arg_set

    out = {}
    for key in params:
        param = params.get_param(key)
        required = not is_arg_set(param.value)
        if param.schema or param.description or required:
            out[key] = {"schema": to_jsonable(param.schema, f"param {key!r} schema"),
                        "description": param.description, "required": required}
    return out
