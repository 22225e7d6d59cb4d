"""Each Airflow 3 DAG file of ``tests/sdk/dags`` gives the DagSpec stored for it.

The files (the examples, the integration tests' DAGs, mapping, mapped-group,
``start_from_trigger`` and scheduling variants) are parsed as the parse server
parses them: Airflow's DagBag, then ``shared.airflow_spec``. Their specs are
the scheduler's whole view of them (edges, trigger rules, retries, pools,
effective weights, mapping trees, per-index start values, schedules, params),
compared field by field with ``dags/specs/<file>.json``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sdk.airflow_spec_helpers import dag_files, expected, parse_copy


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("dags")
    return folder, parse_copy(folder)


def assert_same(want: dict, got: dict) -> None:
    assert sorted(got) == sorted(want)
    for dag_id, spec in want.items():
        assert [t["task_id"] for t in got[dag_id]["tasks"]] == [t["task_id"] for t in spec["tasks"]]
        for field, value in spec.items():
            if field != "tasks":
                assert got[dag_id][field] == value, f"{dag_id}: DAG field {field}"
        for w, g in zip(spec["tasks"], got[dag_id]["tasks"], strict=True):
            assert set(g) == set(w), f"{dag_id}: task {w['task_id']}: fields"
            for field in w:
                assert g[field] == w[field], f"{dag_id}: task {w['task_id']}: field {field}"


@pytest.mark.parametrize("name", sorted(dag_files()))
def test_each_dag_file_gives_its_stored_spec(name: str, parsed):
    folder, specs = parsed
    got = specs[name]
    assert got, f"{name}: no DAG"
    for spec in got.values():
        assert spec["fileloc"] == str((folder / f"{name}.py").resolve())
    assert_same(expected(name), {d: {k: v for k, v in s.items() if k != "fileloc"}
                                 for d, s in got.items()})


def test_every_stored_spec_has_its_dag_file():
    stored = {p.stem for p in (Path(__file__).parent / "dags" / "specs").glob("*.json")}
    assert stored == set(dag_files())


def test_airflows_own_facts_are_the_specs(parsed):
    """What Airflow's objects hold is what the scheduler gets, as Airflow's UI shows it."""
    _, specs = parsed
    etl = specs["example_etl_taskflow"]["etl_taskflow"]
    assert {t["operator"] for t in etl["tasks"]} == {"@task"}  # custom_operator_name
    knobs = specs["scheduling_knobs"]
    # Airflow's CronMixin resolves a preset to its five fields when the DAG is built
    assert knobs["knobs_cron"]["schedule"]["timetable"]["__var"]["expression"] == "0 0 * * *"
    assert knobs["knobs_cron"]["schedule"]["summary"] == "0 0 * * *"
    assert knobs["knobs_cron"]["tags"] == ["a", "b"]
    # StartTriggerArgs is a class attribute: from_trigger's __init__ assigned its
    # trigger_kwargs, so from_worker (given none) holds the changed class value
    docs = {t["task_id"]: t["start_trigger"]["base"]
            for t in specs["docs_deferrable"]["docs_deferrable"]["tasks"]}
    assert docs["from_worker"]["start_from_trigger"] is False
    assert docs["from_worker"]["trigger_kwargs"] == docs["from_trigger"]["trigger_kwargs"] == {
        "delta": {"__sluice_type__": "timedelta", "seconds": 1.0}}
