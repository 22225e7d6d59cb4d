"""DAG files written as Airflow 3 users write them run through the real daemons.

Each DAG is written once, as a template in ``airflow_dags/`` (also parsed by
tests/sdk's spec tests): ``__IMPORTS__`` becomes the Airflow 3 import block
below and ``__DAG_ID__`` the template's name. The results (per task instance:
state, try number, return value; and the run's state) are the values Airflow
gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from tests.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(180)

TEMPLATES = Path(__file__).resolve().parent / "airflow_dags"

IMPORTS = """\
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
"""

#: The class path templates give ``StartTriggerArgs.trigger_cls``.
TIME_DELTA_TRIGGER = "airflow.providers.standard.triggers.temporal.TimeDeltaTrigger"


def render(template: str) -> tuple[str, str]:
    """(file name, source) of a template; its DAG id and module name are the template's name."""
    source = (TEMPLATES / f"{template}.tmpl").read_text()
    for key, value in (("__IMPORTS__", IMPORTS.rstrip("\n")), ("__DAG_ID__", template),
                       ("__STEM__", template), ("__TIME_DELTA_TRIGGER__", TIME_DELTA_TRIGGER),
                       ("__CONTEXT_IMPORT__", "from airflow.sdk import Context")):
        source = source.replace(key, value)
    assert "__" + "IMPORTS" not in source
    return f"{template}.py", source


def write_templates(cluster: Cluster, *templates: str) -> None:
    for template in templates:
        name, source = render(template)
        (cluster.dags_folder / name).write_text(source)


def results(doc: dict) -> dict:
    """Run state and, per instance, (state, try number, return value)."""
    return {"state": doc["state"],
            "tasks": {(t["task_id"], t["map_index"]): (t["state"], t["try_number"], t["return_value"])
                      for t in doc["tasks"]}}


async def run_all(cluster: Cluster, dag_ids: list[str], timeout: float = 120) -> dict[str, dict]:
    """Trigger every DAG first (they run concurrently), then wait for each run; results by DAG."""
    for dag_id in dag_ids:
        await cluster.wait_dag(dag_id, timeout=120)  # the scheduler imports Airflow first
    run_ids = {dag_id: await cluster.trigger(dag_id) for dag_id in dag_ids}
    return {dag_id: results(await cluster.wait_run(run_id, timeout))
            for dag_id, run_id in run_ids.items()}


def values(res: dict) -> dict:
    return {key: value for key, (_, _, value) in res["tasks"].items()}


def states(res: dict) -> dict:
    return {key: state for key, (state, _, _) in res["tasks"].items()}


async def dags_list(cluster: Cluster) -> dict:
    out = await anyio.to_thread.run_sync(lambda: cluster.cli("dags", "list", "--json"))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def import_errors(cluster: Cluster, names: list[str], timeout: float = 120) -> dict[str, str]:
    """The import error message of each named DAG file, once all are recorded."""
    async def recorded():
        errors = {Path(e["fileloc"]).name: e["message"] for e in (await dags_list(cluster))["import_errors"]}
        return errors if all(n in errors for n in names) else None

    return await wait_for(recorded, timeout, f"import errors for {names}")


def started_in_triggerer(cluster: Cluster) -> list[dict]:
    return [json.loads(line) for line in cluster.log("scheduler").splitlines()
            if '"task_started_in_triggerer"' in line]


# --- Airflow 3 DAG files: TaskFlow, classic operators, deferral ----------------------


async def test_features_dag_gives_airflows_results(cluster: Cluster):
    write_templates(cluster, "features")
    cluster.start_all()
    res = (await run_all(cluster, ["features"]))["features"]

    assert res["state"] == "success", res
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


async def test_deferral_dag_gives_airflows_results(cluster: Cluster):
    write_templates(cluster, "deferral")
    cluster.start_all()
    res = (await run_all(cluster, ["deferral"]))["deferral"]

    assert res["state"] == "success", res
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
    # the start trigger was built from the class path StartTriggerArgs names
    assert {(e["dag_id"], e["task_id"], e["trigger"]) for e in started_in_triggerer(cluster)} == {
        ("deferral", "starts_in_triggerer", TIME_DELTA_TRIGGER)}


async def test_deferrable_sensor_as_in_airflow_docs_with_context_annotations(cluster: Cluster):
    write_templates(cluster, "docs_deferrable")
    cluster.start_all()
    res = (await run_all(cluster, ["docs_deferrable"]))["docs_deferrable"]
    assert res == {"state": "success", "tasks": {
        ("from_trigger", -1): ("success", 1, "from_trigger resumed, event is a datetime: True"),
        ("from_worker", -1): ("success", 1, "from_worker resumed, event is a datetime: True")}}
    assert [(e["dag_id"], e["task_id"]) for e in started_in_triggerer(cluster)] == [
        ("docs_deferrable", "from_trigger")]


# --- Airflow's own example DAGs (our equivalents), results as Airflow gives them -----


async def run_examples(cluster: Cluster, dag_ids: list[str]) -> dict[str, dict]:
    """Write both example templates, run the named DAGs; every instance succeeds in one try."""
    write_templates(cluster, "dynamic_task_mapping", "mapping_no_taskflow")
    cluster.start_all()
    res = await run_all(cluster, dag_ids)
    for r in res.values():
        assert r["state"] == "success", r
        assert all(state == "success" for state in states(r).values()), r
        assert all(try_number == 1 for _, try_number, _ in r["tasks"].values()), r
    return res


async def test_example_dynamic_task_mapping_equivalents(cluster: Cluster):
    res = await run_examples(cluster, ["dynamic_task_mapping", "dynamic_task_mapping_second_order",
                                       "mapping_no_taskflow"])
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
    res = await run_examples(cluster, ["dynamic_task_mapping_from_upstream",
                                       "mapping_no_taskflow_from_upstream"])
    # get_nums >> times_2.expand >> add_10.expand -> [12, 14, 16]
    assert values(res["dynamic_task_mapping_from_upstream"]) == {
        ("get_nums", -1): [1, 2, 3], ("times_2", 0): 2, ("times_2", 1): 4, ("times_2", 2): 6,
        ("add_10", 0): 12, ("add_10", 1): 14, ("add_10", 2): 16}
    # an operator returning a list, mapped over, mapped again, each reduced
    assert values(res["mapping_no_taskflow_from_upstream"]) == {
        ("numbers", -1): [1, 2, 3], ("add_one", 0): 2, ("add_one", 1): 3, ("add_one", 2): 4,
        ("add_one_again", 0): 3, ("add_one_again", 1): 4, ("add_one_again", 2): 5,
        ("sum_first", -1): 9, ("sum_second", -1): 12}


# --- a file that does not load is an import error, as Airflow reports it ------------

MISSING_PROVIDER = """\
from datetime import datetime
from airflow.sdk import dag
from airflow.providers.amazon.aws.operators.s3 import S3CreateBucketOperator

@dag(schedule=None, start_date=datetime(2026, 1, 1))
def uses_s3():
    S3CreateBucketOperator(task_id="bucket", bucket_name="b")
uses_s3()
"""

MISSING_NAME = """\
from datetime import datetime
from airflow.sdk import dag, task_flow

@dag(schedule=None, start_date=datetime(2026, 1, 1))
def misspelt():
    pass
misspelt()
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


async def test_files_that_do_not_load_are_import_errors_and_other_files_still_run(cluster: Cluster):
    missing = cluster.write_dag("uses_s3.py", MISSING_PROVIDER).resolve()
    misspelt = cluster.write_dag("misspelt.py", MISSING_NAME).resolve()
    cluster.write_dag("mapped_group.py", MAPPED_TASK_GROUP)
    write_templates(cluster, "dynamic_task_mapping")
    cluster.start_all()
    errors = await import_errors(cluster, ["uses_s3.py", "misspelt.py", "mapped_group.py"])

    # Airflow's DagBag decides the message: the traceback down to the line of the import
    s3 = errors["uses_s3.py"]  # a provider this venv does not have
    assert f'File "{missing}", line 3, in <module>' in s3, s3
    assert s3.rstrip().endswith(
        "ModuleNotFoundError: No module named 'airflow.providers.amazon'"), s3
    name = errors["misspelt.py"]
    assert f'File "{misspelt}", line 2, in <module>' in name, name
    assert "ImportError: cannot import name 'task_flow' from 'airflow.sdk'" in name, name
    # Airflow builds the nested mapped groups; Sluice's scheduler refuses the DAG
    group = errors["mapped_group.py"]
    assert "DAG 'mapped_group': task 'group.inner.inc': mapped task group 'group.inner' is " \
           "nested in mapped task group 'group': nested mapped task groups are not supported" \
           in group, group

    listed = await dags_list(cluster)
    assert [d["dag_id"] for d in listed["dags"]] == [
        "dynamic_task_mapping", "dynamic_task_mapping_from_upstream",
        "dynamic_task_mapping_second_order"]
    await cluster.wait_dag("dynamic_task_mapping", timeout=120, allow_errors=True)
    run_id = await cluster.trigger("dynamic_task_mapping", allow_errors=True)
    doc = await cluster.wait_run(run_id)
    assert doc["state"] == "success"
    assert values(results(doc))[("sum_it", -1)] == 9
