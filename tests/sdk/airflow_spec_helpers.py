"""One DAG source, two SDKs: rendered with ``shared.sdk`` or ``airflow.sdk`` imports and parsed.

A template's ``__IMPORTS__`` becomes one of the import blocks below (the same
names either way); the legacy variant is loaded by ``shared.dagbag`` and
serialized by ``serialize_dag``, the Airflow one by ``shared.airflow_spec``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIRS = (ROOT / "tests" / "sdk" / "dags", ROOT / "tests" / "integration" / "airflow_dags")

IMPORTS = {
    "legacy": """\
from shared.sdk import (
    DAG, AirflowSkipException, BaseOperator, BaseTrigger, BashOperator, Context, EmptyOperator,
    PythonOperator, StartTriggerArgs, TaskGroup, TimeDeltaTrigger, TriggerEvent, TriggerRule,
    dag, get_current_context, task, task_group,
)
from shared.sdk.sensors import BaseSensorOperator, PokeReturnValue, TimeDeltaSensor""",
    "airflow": """\
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import (
    DAG, BaseOperator, BaseSensorOperator, Context, PokeReturnValue, TaskGroup, TriggerRule, dag,
    get_current_context, task, task_group,
)
from airflow.sdk.exceptions import AirflowSkipException
from airflow.triggers.base import BaseTrigger, StartTriggerArgs, TriggerEvent""",
}

#: A class path both variants give ``StartTriggerArgs`` (a string the parser never imports).
TIME_DELTA_TRIGGER = "airflow.providers.standard.triggers.temporal.TimeDeltaTrigger"


def templates() -> dict[str, Path]:
    """Every shared DAG source by name: this folder's and the integration tests' templates."""
    return {p.stem: p for d in TEMPLATE_DIRS for p in sorted(d.glob("*.tmpl"))}


def render(template: Path, variant: str) -> str:
    source = template.read_text()
    for key, value in (("__IMPORTS__", IMPORTS[variant]), ("__DAG_ID__", template.stem),
                       ("__STEM__", template.stem), ("__TIME_DELTA_TRIGGER__", TIME_DELTA_TRIGGER),
                       ("__CONTEXT_IMPORT__", "")):
        source = source.replace(key, value)
    assert "__IMPORTS__" not in source and "__DAG_ID__" not in source
    return source


def write(folder: Path, template: Path, variant: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{template.stem}.py"
    path.write_text(render(template, variant))
    return path


def legacy_specs(path: Path, folder: Path) -> dict[str, dict[str, Any]]:
    """The file's DAGs as the legacy loader and ``serialize_dag`` give them, by dag_id."""
    from shared.dagbag import load_file
    from shared.serialization import DagSpec, serialize_dag

    result = load_file(path, folder)
    assert result.error is None, result.error
    return {d.dag_id: DagSpec.model_validate(serialize_dag(d)).model_dump(mode="json")
            for d in result.dags}


def airflow_specs(path: Path, folder: Path) -> dict[str, dict[str, Any]]:
    """The file's DAGs parsed by Airflow's DagBag and walked by ``shared.airflow_spec``, by dag_id."""
    from shared.airflow_spec import load, validated_spec

    results = load(path, folder)
    result = results[str(path.resolve())]
    assert result.error is None, result.error
    return {d.dag_id: validated_spec(d).model_dump(mode="json") for d in result.dags}
