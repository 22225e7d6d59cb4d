"""Airflow 2/3 DAG files load unchanged on Sluice (shared.compat)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared import compat
from shared.dagbag import FileResult, load_file
from shared.sdk import operators, triggers
from shared.serialization import serialize_dag
from tests.unit.conftest import write_dag_file

AIRFLOW3 = """
from airflow.sdk import DAG, BaseOperator, TaskGroup, TriggerRule, chain, dag, task
from airflow.sdk.bases.operator import BaseOperator as BaseOperator3
from airflow.sdk.definitions.taskgroup import TaskGroup as TaskGroup3
from airflow.exceptions import AirflowSkipException
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
assert BaseOperator is BaseOperator3 and TaskGroup is TaskGroup3
"""

AIRFLOW2 = """
from airflow import DAG
from airflow.decorators import dag, task
from airflow.exceptions import AirflowSkipException
from airflow.models import BaseOperator
from airflow.models.baseoperator import chain
from airflow.operators.bash import BashOperator
from airflow.operators.empty import EmptyOperator
from airflow.operators.python import PythonOperator
from airflow.triggers.temporal import TimeDeltaTrigger
from airflow.utils.task_group import TaskGroup
from airflow.utils.trigger_rule import TriggerRule
"""

SLUICE = """
from shared.sdk import (DAG, AirflowSkipException, BaseOperator, BashOperator, EmptyOperator,
                        PythonOperator, TaskGroup, TimeDeltaTrigger, TriggerRule, chain, dag,
                        task)
"""

BODY = """
from datetime import datetime, timedelta


class Wait(BaseOperator):
    def execute(self, context):
        self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=1)), method_name="done")

    def done(self, context, event=None):
        return "ok"


def maybe_skip():
    raise AirflowSkipException("nothing to do")


@dag(dag_id="taskflow", schedule="@daily", start_date=datetime(2024, 1, 1), tags=["t"])
def taskflow():
    @task
    def extract():
        return {"a": 1}

    @task(retries=2)
    def load(data):
        print(data)

    start = EmptyOperator(task_id="start")
    end = EmptyOperator(task_id="end", trigger_rule=TriggerRule.ALL_DONE)
    start >> load(extract()) >> end >> Wait(task_id="wait")


taskflow()

with DAG("classic", schedule=None, start_date=datetime(2024, 1, 1),
         default_args={"retries": 1, "retry_delay": timedelta(minutes=1)}):
    begin = EmptyOperator(task_id="begin")
    with TaskGroup("grp"):
        echo = BashOperator(task_id="echo", bash_command="echo hi")
        skip = PythonOperator(task_id="skip", python_callable=maybe_skip)
    finish = EmptyOperator(task_id="finish", trigger_rule=TriggerRule.NONE_FAILED)
    chain(begin, echo, skip, finish)
"""



def load(folder: Path, name: str, source: str) -> FileResult:
    return load_file(write_dag_file(folder, name, source), folder)


def shapes(result: FileResult) -> dict[str, dict]:
    assert result.error is None, result.error
    out = {}
    for d in result.dags:
        spec = serialize_dag(d)
        spec.pop("fileloc")
        out[d.dag_id] = spec
    return out


needs_no_real_airflow = pytest.mark.skipif(
    importlib.util.find_spec("airflow") is not None, reason="the real Airflow is installed")
pytestmark = [needs_no_real_airflow, pytest.mark.usefixtures("isolated_dag_modules")]


@pytest.mark.parametrize("imports", [AIRFLOW3, AIRFLOW2], ids=["airflow3", "airflow2"])
def test_airflow_dag_file_equals_sluice_dag_file(tmp_path: Path, imports: str) -> None:
    expected = shapes(load(tmp_path, "sluice_dags", SLUICE + BODY))
    result = load(tmp_path, "airflow_dags", imports + BODY)
    assert shapes(result) == expected
    assert set(expected) == {"taskflow", "classic"}
    classic = next(d for d in result.dags if d.dag_id == "classic")
    assert type(classic.get_task("grp.echo")) is operators.BashOperator
    assert classic.get_task("grp.echo").retries == 1


@pytest.mark.parametrize(("source", "module", "name"), [
    ("from airflow.operators.bash import KubernetesPodOperator",
     "airflow.operators.bash", "KubernetesPodOperator"),
    ("from airflow.sdk import NoSuchAirflowThing", "airflow.sdk", "NoSuchAirflowThing"),
    ("from airflow.operators.python import os", "airflow.operators.python", "os"),
])
def test_unsupported_name_fails_at_load(tmp_path: Path, source: str, module: str,
                                        name: str) -> None:
    result = load(tmp_path, "bad_name", source + "\nfrom airflow.sdk import dag\n")
    assert result.dags == []
    assert "ImportError" in result.error
    assert f"cannot import name {name!r} from {module!r}: not supported by Sluice" in result.error


def test_unsupported_module_fails_at_load(tmp_path: Path) -> None:
    result = load(tmp_path, "bad_module", """
        from airflow.sdk import dag
        from airflow.providers.amazon.aws.operators.s3 import S3CreateBucketOperator
    """)
    assert result.dags == []
    assert ("ModuleNotFoundError: No module named 'airflow.providers.amazon' "
            "(not supported by Sluice)") in result.error
    assert ":3:" in result.error  # the line of the offending import


def test_missing_source_module_is_reported_when_a_name_is_asked_for(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(compat.MODULES, "airflow.sensors.base", ["shared.sdk.no_such_module"])
    compat.install_if_enabled()
    module = importlib.import_module("airflow.sensors.base")  # importing is fine
    with pytest.raises(ImportError, match=r"'BaseSensorOperator' from 'airflow.sensors.base': "
                                          r"not supported by Sluice"):
        module.BaseSensorOperator  # noqa: B018


@pytest.mark.parametrize("value", ["false", "0", "NO", " off "])
def test_disabled_by_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SLUICE_AIRFLOW_COMPAT", value)
    result = load(tmp_path, "disabled", "from airflow.sdk import dag\n")
    assert compat._FINDER not in sys.meta_path
    assert "No module named 'airflow'" in result.error
    assert "Sluice" not in result.error
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("airflow")


def test_real_airflow_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "airflow" else real_find_spec(name, *a))
    compat.install_if_enabled()
    assert compat._FINDER not in sys.meta_path


def test_install_is_idempotent_and_uninstall_cleans_up() -> None:
    compat.install_if_enabled()
    compat.install_if_enabled()
    assert sys.meta_path.count(compat._FINDER) == 1
    importlib.import_module("airflow.sdk.definitions.dag")
    compat.uninstall()
    assert compat._FINDER not in sys.meta_path
    assert not [n for n in sys.modules if n == "airflow" or n.startswith("airflow.")]
    compat.install_if_enabled()  # a stale proxy does not pass for the real Airflow
    assert compat._FINDER in sys.meta_path


@pytest.mark.parametrize(("classpath", "expected"), [
    ("airflow.providers.standard.triggers.temporal.TimeDeltaTrigger", triggers.TimeDeltaTrigger),
    ("airflow.providers.standard.triggers.temporal.DateTimeTrigger", triggers.DateTimeTrigger),
    ("airflow.triggers.temporal.TimeDeltaTrigger", triggers.TimeDeltaTrigger),
    ("airflow.providers.standard.triggers.file.FileTrigger", triggers.FileTrigger),
    ("airflow.triggers.base.TriggerEvent", triggers.TriggerEvent),
    ("airflow.triggers.base.StartTriggerArgs", triggers.StartTriggerArgs),
    ("airflow.triggers.base.TaskSuccessEvent", triggers.TaskSuccessEvent),
])
def test_trigger_classpaths_resolve(classpath: str, expected: type) -> None:
    compat.install_if_enabled()
    module, _, name = classpath.rpartition(".")
    assert getattr(importlib.import_module(module), name) is expected


def test_module_shapes() -> None:
    compat.install_if_enabled()
    import airflow.sdk
    from airflow.sdk import definitions

    assert airflow.sdk.__path__ == [] and definitions.__path__ == []
    assert not hasattr(airflow.sdk, "__file__")
    assert "dag" in airflow.sdk.__all__ and "task" in dir(airflow.sdk)
    namespace: dict = {}
    exec("from airflow.sdk import *", namespace)
    assert namespace["dag"] is airflow.sdk.dag and "os" not in namespace
    with pytest.raises(ModuleNotFoundError, match="is not a package"):
        importlib.import_module("airflow.exceptions.sub")


def test_dates_and_timezone_helpers() -> None:
    compat.install_if_enabled()
    from airflow.sdk import timezone as tz3
    from airflow.utils import timezone
    from airflow.utils.dates import days_ago

    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert days_ago(2) in (midnight - timedelta(days=2), midnight - timedelta(days=1))
    assert tz3.utcnow is timezone.utcnow
    assert timezone.datetime(2024, 1, 2) == datetime(2024, 1, 2, tzinfo=UTC)
    assert timezone.utcnow().tzinfo is UTC
    assert timezone.convert_to_utc(datetime(2024, 1, 1)) == datetime(2024, 1, 1, tzinfo=UTC)
    assert timezone.parse("2024-01-01T02:00:00+02:00") == datetime(2024, 1, 1, tzinfo=UTC)
