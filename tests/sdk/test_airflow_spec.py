"""The same DAG source gives the same DagSpec whether Airflow's Task SDK or the legacy SDK built it.

Every template (examples/dags, the integration tests' Airflow DAGs, mapping,
mapped-group, start_from_trigger and scheduling variants) is rendered twice:
with ``from shared.sdk import ...`` (``shared.dagbag`` + ``serialize_dag``) and
with ``from airflow.sdk import ...`` (Airflow's DagBag + ``shared.airflow_spec``).
Each DAG's spec must be equal field by field, except where Airflow itself
holds a different fact (``AIRFLOW_DIFFERS`` says which and why).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.schedules import CRON_PRESETS
from tests.sdk.airflow_spec_helpers import airflow_specs, legacy_specs, templates, write

#: Fields only Airflow's SDK has facts for (the legacy SDK refuses setup/teardown and
#: Param and keeps no callbacks or lineage); checked in test_airflow_spec_only.py.
AIRFLOW_ONLY_TASK = ("is_setup", "is_teardown", "on_failure_fail_dagrun", "callbacks",
                     "inlets", "outlets")
AIRFLOW_ONLY_DAG = ("param_schemas",)

AIRFLOW_DIFFERS = {
    # Airflow names a @task by its decorator (custom_operator_name), as its UI shows it.
    "operator": "a @task is '@task' in Airflow, 'DecoratedPythonOperator' in the legacy SDK",
    # Airflow's DAG keeps tags in a set; the spec lists them sorted.
    "tags": "a set in Airflow, sorted in the spec; the legacy SDK keeps the order written",
    # Airflow's CronMixin resolves a preset to its five fields when the DAG is built.
    "schedule": "Airflow stores '@daily' as '0 0 * * *' (same ticks)",
    # StartTriggerArgs is a class attribute: an __init__ that assigns its trigger_kwargs
    # (the pattern of Airflow's docs) changes it for every instance of the class. The legacy
    # SDK gave each instance a copy; Airflow's objects hold the changed value.
    "start_trigger": "docs_deferrable.from_worker sees the class value from_trigger's __init__ set",
}

#: (template, dag_id, task_id) whose start_trigger base differs as AIRFLOW_DIFFERS says.
SHARED_START_ARGS = {("docs_deferrable", "docs_deferrable", "from_worker")}


def _preset_resolved(schedule: dict | None) -> dict | None:
    if schedule and schedule.get("kind") == "cron":
        return {**schedule, "expr": CRON_PRESETS.get(schedule["expr"], schedule["expr"])}
    return schedule


def expected_from_legacy(spec: dict[str, Any]) -> dict[str, Any]:
    """The legacy spec with every AIRFLOW_DIFFERS rule applied (what Airflow must give)."""
    spec = {k: v for k, v in spec.items() if k not in AIRFLOW_ONLY_DAG and k != "fileloc"}
    spec["tags"] = sorted(spec["tags"])
    spec["schedule"] = _preset_resolved(spec["schedule"])
    spec["tasks"] = [
        {k: ("@task" if k == "operator" and v == "DecoratedPythonOperator" else v)
         for k, v in t.items() if k not in AIRFLOW_ONLY_TASK}
        for t in spec["tasks"]]
    return spec


def comparable(spec: dict[str, Any]) -> dict[str, Any]:
    spec = {k: v for k, v in spec.items() if k not in AIRFLOW_ONLY_DAG and k != "fileloc"}
    spec["tasks"] = [{k: v for k, v in t.items() if k not in AIRFLOW_ONLY_TASK}
                     for t in spec["tasks"]]
    return spec


def assert_same(template: str, dag_id: str, want: dict, got: dict) -> None:
    assert [t["task_id"] for t in got["tasks"]] == [t["task_id"] for t in want["tasks"]], dag_id
    for field in want:
        if field != "tasks":
            assert got[field] == want[field], f"{dag_id}: DAG field {field}"
    for w, g in zip(want["tasks"], got["tasks"], strict=True):
        for field in w:
            if field == "start_trigger" and (template, dag_id, w["task_id"]) in SHARED_START_ARGS:
                assert g[field]["base"]["trigger_kwargs"] != w[field]["base"]["trigger_kwargs"]
                assert {**g[field], "base": None} == {**w[field], "base": None}
                continue
            assert g[field] == w[field], f"{dag_id}: task {w['task_id']}: field {field}"


@pytest.mark.parametrize("name", sorted(templates()))
def test_the_same_source_gives_the_same_spec_with_either_sdk(name: str, tmp_path: Path):
    template = templates()[name]
    legacy = legacy_specs(write(tmp_path / "legacy", template, "legacy"), tmp_path / "legacy")
    airflow = airflow_specs(write(tmp_path / "airflow", template, "airflow"), tmp_path / "airflow")
    assert sorted(airflow) == sorted(legacy) and legacy
    for dag_id, spec in legacy.items():
        assert_same(name, dag_id, expected_from_legacy(spec), comparable(airflow[dag_id]))
        assert airflow[dag_id]["fileloc"] == str((tmp_path / "airflow" / f"{name}.py").resolve())


def test_the_differences_are_real_and_only_those():
    """Each listed difference shows in at least one template (no stale exception)."""
    import tempfile

    seen: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        for name, template in templates().items():
            folder = Path(tmp) / name
            legacy = legacy_specs(write(folder / "legacy", template, "legacy"), folder / "legacy")
            airflow = airflow_specs(write(folder / "airflow", template, "airflow"),
                                    folder / "airflow")
            for dag_id, spec in legacy.items():
                got, raw = comparable(airflow[dag_id]), comparable(spec)
                seen |= {f for f in raw if f != "tasks" and raw[f] != got[f]}
                for w, g in zip(raw["tasks"], got["tasks"], strict=True):
                    seen |= {f for f in w if w[f] != g[f]}
    assert seen == set(AIRFLOW_DIFFERS)
