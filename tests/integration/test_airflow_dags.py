"""DAG files written for Airflow (2 and 3 import paths) run unchanged, through the real daemons.

Each DAG is written once, as a template in ``airflow_dags/``; the three variants
differ only in their import block (``shared.sdk``, Airflow 2, Airflow 3) and
their DAG id. A variant's results (per task instance: state, try number,
return value; and the run's state) must equal the ``shared.sdk`` variant's,
and the values Airflow gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from tests.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(180)

TEMPLATES = Path(__file__).resolve().parent / "airflow_dags"

IMPORTS = {
    "sdk": """\
from shared.sdk import (
    DAG, AirflowSkipException, BaseOperator, BaseTrigger, BashOperator, EmptyOperator,
    PythonOperator, StartTriggerArgs, TaskGroup, TimeDeltaTrigger, TriggerEvent, TriggerRule,
    dag, get_current_context, task, task_group,
)
from shared.sdk.sensors import BaseSensorOperator, PokeReturnValue
""",
    "af2": """\
from airflow import DAG
from airflow.decorators import dag, task, task_group
from airflow.exceptions import AirflowSkipException
from airflow.models import BaseOperator
from airflow.operators.bash import BashOperator
from airflow.operators.empty import EmptyOperator
from airflow.operators.python import PythonOperator, get_current_context
from airflow.sensors.base import BaseSensorOperator, PokeReturnValue
from airflow.triggers.base import BaseTrigger, StartTriggerArgs, TriggerEvent
from airflow.triggers.temporal import TimeDeltaTrigger
from airflow.utils.task_group import TaskGroup
from airflow.utils.trigger_rule import TriggerRule
""",
    "af3": """\
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import (
    DAG, BaseOperator, BaseSensorOperator, PokeReturnValue, TaskGroup, TriggerRule, dag,
    get_current_context, task, task_group,
)
from airflow.sdk.exceptions import AirflowSkipException
from airflow.triggers.base import BaseTrigger, StartTriggerArgs, TriggerEvent
""",
}

#: The TimeDeltaTrigger class path each variant gives StartTriggerArgs.trigger_cls.
TIME_DELTA_TRIGGER = {
    "sdk": "shared.sdk.triggers.TimeDeltaTrigger",
    "af2": "airflow.triggers.temporal.TimeDeltaTrigger",
    "af3": "airflow.providers.standard.triggers.temporal.TimeDeltaTrigger",
}

#: Where each variant imports ``Context`` (the type of ``execute``'s argument) from.
CONTEXT_IMPORT = {
    "sdk": "from shared.sdk import Context",
    "af2": "from airflow.utils.context import Context",
    "af3": "from airflow.sdk import Context",
}

VARIANTS = tuple(IMPORTS)


def render(template: str, variant: str) -> tuple[str, str]:
    """(file name, source) of one variant; its DAG id and module name are ``<template>_<variant>``."""
    stem = f"{template}_{variant}"
    source = (TEMPLATES / f"{template}.tmpl").read_text()
    for key, value in (("__IMPORTS__", IMPORTS[variant].rstrip("\n")), ("__DAG_ID__", stem),
                       ("__STEM__", stem), ("__TIME_DELTA_TRIGGER__", TIME_DELTA_TRIGGER[variant]),
                       ("__CONTEXT_IMPORT__", CONTEXT_IMPORT[variant])):
        source = source.replace(key, value)
    assert "__" + "IMPORTS" not in source
    return f"{stem}.py", source


def write_variants(cluster: Cluster, template: str, variants=VARIANTS) -> None:
    for variant in variants:
        name, source = render(template, variant)
        (cluster.dags_folder / name).write_text(source)


def results(doc: dict) -> dict:
    """What must be equal between variants: run state and, per instance, state/try/value."""
    return {"state": doc["state"],
            "tasks": {(t["task_id"], t["map_index"]): (t["state"], t["try_number"], t["return_value"])
                      for t in doc["tasks"]}}


async def run_all(cluster: Cluster, dag_ids: list[str], timeout: float = 90) -> dict[str, dict]:
    """Trigger every DAG first (they run concurrently), then wait for each run."""
    run_ids = {dag_id: await cluster.trigger(dag_id) for dag_id in dag_ids}
    return {dag_id: await cluster.wait_run(run_id, timeout) for dag_id, run_id in run_ids.items()}


def assert_same_as_sdk(docs: dict[str, dict], dag_id_of) -> dict:
    """Every Airflow variant's results equal the shared.sdk variant's; returns those."""
    expected = results(docs[dag_id_of("sdk")])
    for variant in VARIANTS[1:]:
        assert results(docs[dag_id_of(variant)]) == expected, variant
    return expected


def values(res: dict) -> dict:
    return {key: value for key, (_, _, value) in res["tasks"].items()}


def states(res: dict) -> dict:
    return {key: state for key, (state, _, _) in res["tasks"].items()}


async def dags_list(cluster: Cluster) -> dict:
    out = await anyio.to_thread.run_sync(lambda: cluster.cli("dags", "list", "--json"))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def import_errors(cluster: Cluster, names: list[str], timeout: float = 30) -> dict[str, str]:
    """The import error message of each named DAG file, once all are recorded."""
    async def recorded():
        errors = {Path(e["fileloc"]).name: e["message"] for e in (await dags_list(cluster))["import_errors"]}
        return errors if all(n in errors for n in names) else None

    return await wait_for(recorded, timeout, f"import errors for {names}")


# --- the same DAG in three import styles ---------------------------------------------


async def test_features_dag_same_results_in_sdk_airflow2_and_airflow3_syntax(cluster: Cluster):
    write_variants(cluster, "features")
    cluster.start_all()
    docs = await run_all(cluster, [f"features_{v}" for v in VARIANTS])
    res = assert_same_as_sdk(docs, lambda v: f"features_{v}")

    assert res["state"] == "success"
    v = values(res)
    # TaskFlow (multiple_outputs also keeps return_value)
    assert v[("extract", -1)] == {"a": 1, "b": 2, "c": 3}
    assert v[("transform", -1)] == {"total": 6, "keys": ["a", "b", "c"]}
    assert v[("load", -1)] == "6:a-b-c"
    # classic operators mapped: partial/expand, expand_kwargs over XComArg.map, a reduce
    assert [v[("multiply", i)] for i in range(3)] == [10, 20, 30]
    assert [v[("double", i)] for i in range(3)] == [2, 4, 6]
    assert [v[("square", i)] for i in range(3)] == [1, 4, 9]
    assert [v[("echo", i)] for i in range(2)] == ["echo-0", "second"]
    assert v[("reduce", -1)] == {"doubled": 12, "products": [10, 20, 30], "squares": [1, 4, 9]}
    # trigger rules, skip, retry
    s = states(res)
    tries = {key: try_number for key, (_, try_number, _) in res["tasks"].items()}
    assert s[("skip_me", -1)] == "skipped"
    assert (s[("flaky", -1)], tries[("flaky", -1)], v[("flaky", -1)]) == ("success", 2, "second try")
    assert s[("broken", -1)] == "failed"
    assert s[("after_skip", -1)] == "skipped"
    assert (s[("only_when_skipped", -1)], v[("only_when_skipped", -1)]) == ("success", "all upstreams skipped")
    assert (s[("join", -1)], v[("join", -1)]) == ("success", "joined")
    assert s[("no_skips", -1)] == "skipped"
    assert s[("after_broken", -1)] == "upstream_failed"
    assert (s[("alert", -1)], v[("alert", -1)]) == ("success", "one failed")
    assert (s[("cleanup", -1)], v[("cleanup", -1)]) == ("success", "all done")
    # task groups and a sensor
    assert v[("ready", -1)] == {"ready": "ready"}
    assert s[("prepare.start", -1)] == "success"
    assert v[("prepare.answer", -1)] == 42
    assert v[("prepare.where", -1)] == "prepare.where"
    assert (v[("compute.inc", -1)], v[("compute.square_it", -1)], v[("finish", -1)]) == (43, 1849, 1850)
    assert all(t == 1 for key, t in tries.items()
               if s[key] in ("success", "failed") and key != ("flaky", -1)
               and key != ("prepare.start", -1))


async def test_deferral_dag_same_results_in_sdk_airflow2_and_airflow3_syntax(cluster: Cluster):
    write_variants(cluster, "deferral")
    cluster.start_all()
    docs = await run_all(cluster, [f"deferral_{v}" for v in VARIANTS])
    res = assert_same_as_sdk(docs, lambda v: f"deferral_{v}")

    assert res["state"] == "success"
    assert all(state == "success" for state in states(res).values()), res
    # resuming after a deferral is the same try
    assert all(try_number == 1 for _, try_number, _ in res["tasks"].values()), res
    v = values(res)
    # the trigger class defined in the DAG file ran in the triggerer, loaded by its class path
    assert v[("countdown_one", -1)] == {"asked": 2, "seen": [2, 1], "by_class_path": True}
    assert [v[("countdown_many", i)] for i in range(2)] == [
        {"asked": 1, "seen": [1], "by_class_path": True},
        {"asked": 3, "seen": [3, 2, 1], "by_class_path": True}]
    assert v[("wait_a_bit", -1)] == {"resumed": True, "event_is_datetime": True}
    assert v[("starts_in_triggerer", -1)] == {"note": "from the triggerer", "event_is_datetime": True}
    assert v[("summarize", -1)] == {"one": [2, 1], "many": [[1], [3, 2, 1]], "waited": True,
                                    "started": "from the triggerer"}
    # the start trigger was built from each variant's class path (Airflow's, for the Airflow ones)
    started = [json.loads(line) for line in cluster.log("scheduler").splitlines()
               if '"task_started_in_triggerer"' in line]
    assert {(e["dag_id"], e["trigger"]) for e in started} == {
        (f"deferral_{variant}", TIME_DELTA_TRIGGER[variant]) for variant in VARIANTS}


async def test_deferrable_sensor_as_in_airflow_docs_with_context_annotations(cluster: Cluster):
    write_variants(cluster, "docs_deferrable")
    cluster.start_all()
    docs = await run_all(cluster, [f"docs_deferrable_{v}" for v in VARIANTS])
    res = assert_same_as_sdk(docs, lambda v: f"docs_deferrable_{v}")
    assert res == {"state": "success", "tasks": {
        ("from_trigger", -1): ("success", 1, "from_trigger resumed, event is a datetime: True"),
        ("from_worker", -1): ("success", 1, "from_worker resumed, event is a datetime: True")}}
    started = [json.loads(line) for line in cluster.log("scheduler").splitlines()
               if '"task_started_in_triggerer"' in line]
    assert sorted((e["dag_id"], e["task_id"]) for e in started) == [
        (f"docs_deferrable_{v}", "from_trigger") for v in sorted(VARIANTS)]


# --- Airflow's own example DAGs (our equivalents), results as Airflow gives them -----


async def run_examples(cluster: Cluster, suffixes: dict[str, list[str]]) -> dict[str, dict]:
    """Write both example templates, run the named DAGs of every variant; results by DAG."""
    write_variants(cluster, "dynamic_task_mapping")
    write_variants(cluster, "mapping_no_taskflow")
    cluster.start_all()
    dag_ids = [f"{t}_{v}{s}" for t, ss in suffixes.items() for s in ss for v in VARIANTS]
    docs = await run_all(cluster, dag_ids)
    res = {f"{t}{s}": assert_same_as_sdk(docs, lambda v, t=t, s=s: f"{t}_{v}{s}")
           for t, ss in suffixes.items() for s in ss}
    for r in res.values():
        assert r["state"] == "success"
        assert all(state == "success" for state in states(r).values()), r
        assert all(try_number == 1 for _, try_number, _ in r["tasks"].values()), r
    return res


async def test_example_dynamic_task_mapping_equivalents(cluster: Cluster):
    res = await run_examples(cluster, {"dynamic_task_mapping": ["", "_second_order"],
                                       "mapping_no_taskflow": [""]})
    # example_dynamic_task_mapping: add_one.expand(x=[1, 2, 3]) >> sum_it -> 9
    assert values(res["dynamic_task_mapping"]) == {
        ("add_one", 0): 2, ("add_one", 1): 3, ("add_one", 2): 4, ("sum_it", -1): 9}
    # second order: add_one.expand(x=add_one.expand(x=[1, 2, 3])) -> [3, 4, 5], sum 12
    assert values(res["dynamic_task_mapping_second_order"]) == {
        ("add_one", 0): 2, ("add_one", 1): 3, ("add_one", 2): 4,
        ("add_one__1", 0): 3, ("add_one__1", 1): 4, ("add_one__1", 2): 5, ("sum_it", -1): 12}
    # example_dynamic_task_mapping_with_no_taskflow_operators: AddOne mapped, SumIt -> 9
    assert values(res["mapping_no_taskflow"]) == {
        ("add_one", 0): 2, ("add_one", 1): 3, ("add_one", 2): 4, ("sum_it", -1): 9}


async def test_example_mapping_over_an_unmapped_upstream_list(cluster: Cluster):
    res = await run_examples(cluster, {"dynamic_task_mapping": ["_from_upstream"],
                                       "mapping_no_taskflow": ["_from_upstream"]})
    # get_nums >> times_2.expand >> add_10.expand -> [12, 14, 16]
    assert values(res["dynamic_task_mapping_from_upstream"]) == {
        ("get_nums", -1): [1, 2, 3], ("times_2", 0): 2, ("times_2", 1): 4, ("times_2", 2): 6,
        ("add_10", 0): 12, ("add_10", 1): 14, ("add_10", 2): 16}
    # an operator returning a list, mapped over, mapped again, each reduced
    assert values(res["mapping_no_taskflow_from_upstream"]) == {
        ("numbers", -1): [1, 2, 3], ("add_one", 0): 2, ("add_one", 1): 3, ("add_one", 2): 4,
        ("add_one_again", 0): 3, ("add_one_again", 1): 4, ("add_one_again", 2): 5,
        ("sum_first", -1): 9, ("sum_second", -1): 12}


# --- what is not supported fails loudly, per file ----------------------------------

UNSUPPORTED_MODULE = """\
from datetime import datetime
from airflow.sdk import dag
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

@dag(schedule=None, start_date=datetime(2026, 1, 1))
def uses_kubernetes():
    KubernetesPodOperator(task_id="pod", image="busybox")
uses_kubernetes()
"""

UNSUPPORTED_NAME = """\
from datetime import datetime
from airflow.decorators import dag
from airflow.operators.python import PythonVirtualenvOperator

@dag(schedule=None, start_date=datetime(2026, 1, 1))
def uses_virtualenv():
    PythonVirtualenvOperator(task_id="venv", python_callable=print)
uses_virtualenv()
"""

MAPPED_TASK_GROUP = """\
from datetime import datetime
from airflow.sdk import dag, task, task_group

@dag(schedule=None, start_date=datetime(2026, 1, 1))
def mapped_group():
    @task
    def inc(x):
        return x + 1

    @task_group
    def inner(y):
        inc(y)

    @task_group
    def group(x):
        inner.expand(y=[x])

    group.expand(x=[1, 2])
mapped_group()
"""


async def test_unsupported_airflow_names_are_import_errors_and_other_files_still_run(cluster: Cluster):
    cluster.write_dag("uses_kubernetes.py", UNSUPPORTED_MODULE)
    cluster.write_dag("uses_virtualenv.py", UNSUPPORTED_NAME)
    cluster.write_dag("mapped_group.py", MAPPED_TASK_GROUP)
    write_variants(cluster, "dynamic_task_mapping", ["af3"])
    cluster.start_all()
    errors = await import_errors(cluster, ["uses_kubernetes.py", "uses_virtualenv.py", "mapped_group.py"])

    k8s = errors["uses_kubernetes.py"]
    assert "uses_kubernetes.py:3" in k8s, k8s  # the line of the import
    assert "ModuleNotFoundError: No module named 'airflow.providers.cncf'" in k8s, k8s
    assert "not supported by Sluice" in k8s, k8s
    venv = errors["uses_virtualenv.py"]
    assert "ImportError: cannot import name 'PythonVirtualenvOperator' from " \
           "'airflow.operators.python': not supported by Sluice" in venv, venv
    group = errors["mapped_group.py"]
    assert "DAG 'mapped_group': mapped task group 'group.inner' is nested in mapped task group " \
           "'group': Nested Mapped TaskGroups are not yet supported" in group, group

    listed = await dags_list(cluster)
    assert [d["dag_id"] for d in listed["dags"]] == [
        "dynamic_task_mapping_af3", "dynamic_task_mapping_af3_from_upstream",
        "dynamic_task_mapping_af3_second_order"]
    run_id = await cluster.trigger("dynamic_task_mapping_af3", allow_errors=True)
    doc = await cluster.wait_run(run_id)
    assert doc["state"] == "success"
    assert values(results(doc))[("sum_it", -1)] == 9


async def test_compat_off_makes_airflow_imports_an_import_error(cluster: Cluster):
    write_variants(cluster, "dynamic_task_mapping", ["sdk", "af2"])
    cluster.start_all(SLUICE_AIRFLOW_COMPAT="false")
    errors = await import_errors(cluster, ["dynamic_task_mapping_af2.py"])
    message = errors["dynamic_task_mapping_af2.py"]
    assert "ModuleNotFoundError: No module named 'airflow'" in message, message
    assert "not supported by Sluice" not in message, message
    assert list(errors) == ["dynamic_task_mapping_af2.py"]

    run_id = await cluster.trigger("dynamic_task_mapping_sdk", allow_errors=True)
    doc = await cluster.wait_run(run_id)
    assert doc["state"] == "success"
    assert values(results(doc))[("sum_it", -1)] == 9
    assert "dynamic_task_mapping_af2" not in {d["dag_id"] for d in (await dags_list(cluster))["dags"]}
