"""What a DAG file may define: checks the loader makes, Airflow's aliases and dates."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pendulum
import pytest

from shared import compat
from shared.dagbag import FileResult, load_file
from shared.sdk import DAG, EmptyOperator
from shared.sdk.dag import AirflowDagCycleException
from shared.serialization import DagSpec, serialize_dag
from tests.unit.conftest import write_dag_file

pytestmark = pytest.mark.usefixtures("isolated_dag_modules")
write = write_dag_file


def load(folder: Path, name: str, source: str) -> FileResult:
    return load_file(write(folder, name, source), folder)


def loaded(result: FileResult) -> dict[str, DAG]:
    assert result.error is None, result.error
    return {d.dag_id: d for d in result.dags}


needs_compat = pytest.mark.skipif(
    importlib.util.find_spec("airflow") is not None, reason="the real Airflow is installed")


# --- cycles ---------------------------------------------------------------------------

CYCLE = """
from datetime import datetime
from airflow import DAG
from airflow.operators.empty import EmptyOperator

with DAG("looping", schedule=None, start_date=datetime(2026, 1, 1)):
    a = EmptyOperator(task_id="a")
    b = EmptyOperator(task_id="b")
    c = EmptyOperator(task_id="c")
    a >> b >> c >> a
"""

FINE = """
from datetime import datetime
from shared.sdk import dag, task

@dag(schedule=None, start_date=datetime(2026, 1, 1))
def fine():
    @task
    def one():
        return 1
    @task
    def two(x):
        return x + 1
    two(one())
fine()
"""


@needs_compat
def test_cycle_is_the_files_import_failure_naming_dag_and_loop(tmp_path: Path) -> None:
    path = write(tmp_path, "looping", CYCLE)
    result = load_file(path, tmp_path)
    assert result.dags == []
    assert result.error == (f"{path}: AirflowDagCycleException: Cycle detected in DAG: looping. "
                            "Faulty task: c (cycle: a >> b >> c >> a)")
    assert set(loaded(load(tmp_path, "fine", FINE))) == {"fine"}


def test_taskflow_cycle_and_self_loop_are_refused(tmp_path: Path) -> None:
    taskflow = load(tmp_path, "taskflow_loop", """
        from datetime import datetime
        from shared.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def taskflow_loop():
            @task
            def first():
                return 1
            @task
            def second(x):
                return x
            out = first()
            second(out) >> out
        taskflow_loop()
    """)
    assert taskflow.dags == []
    assert taskflow.error.endswith(
        "AirflowDagCycleException: Cycle detected in DAG: taskflow_loop. Faulty task: second "
        "(cycle: first >> second >> first)"), taskflow.error
    with DAG("self_loop", schedule=None) as d:
        t = EmptyOperator(task_id="t")
        t >> t
    with pytest.raises(AirflowDagCycleException) as raised:
        d.check_cycle()
    assert str(raised.value) == "Cycle detected in DAG: self_loop. Faulty task: t"
    assert raised.value.__notes__ == ["cycle: t >> t"]


def test_diamond_groups_and_long_chains_are_not_cycles() -> None:
    from shared.sdk import TaskGroup, chain

    with DAG("diamond", schedule=None) as d:
        top, bottom = EmptyOperator(task_id="top"), EmptyOperator(task_id="bottom")
        with TaskGroup("g") as g:
            EmptyOperator(task_id="l")
            EmptyOperator(task_id="r")
        top >> g >> bottom
        top >> bottom
        chain(*[EmptyOperator(task_id=f"n{i}") for i in range(3000)])
    d.check_cycle()


@needs_compat
def test_airflow_exceptions_export_the_cycle_exception() -> None:
    compat.install_if_enabled()
    from airflow.exceptions import AirflowDagCycleException as airflow2
    from airflow.exceptions import AirflowException
    from airflow.sdk.exceptions import AirflowDagCycleException as airflow3

    assert airflow2 is airflow3 is AirflowDagCycleException
    assert issubclass(airflow2, AirflowException)


# --- dag_id -------------------------------------------------------------------------

@pytest.mark.parametrize("dag_id", ["has space", "slash/in/it", "tab\tin", "é/x", ""])
def test_dag_id_outside_key_characters_fails_its_file(tmp_path: Path, dag_id: str) -> None:
    path = write(tmp_path, "bad_id", f"""
        from datetime import datetime
        from shared.sdk import DAG
        with DAG({dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1)):
            pass
    """)
    result = load_file(path, tmp_path)
    assert result.dags == []
    assert result.error == (
        f"{path}:4: shared.sdk.exceptions.AirflowException: The key {dag_id!r} has to be made "
        f"of alphanumeric characters, dashes, dots and underscores exclusively (DAG {dag_id!r})")


def test_dag_id_length_and_type_limits() -> None:
    assert DAG("a" * 250, schedule=None).dag_id == "a" * 250
    assert DAG("Ünïcode.dots-dash_1", schedule=None).dag_id == "Ünïcode.dots-dash_1"
    from shared.sdk.exceptions import AirflowException

    with pytest.raises(AirflowException) as too_long:
        DAG("a" * 251, schedule=None)
    assert str(too_long.value) == "The key has to be less than 250 characters"
    with pytest.raises(TypeError) as not_str:
        DAG(7, schedule=None)
    assert str(not_str.value) == "The key has to be a string and is <class 'int'>:7"
    assert not_str.value.__notes__ == ["DAG 7"]


def test_decorated_dag_id_is_checked_too(tmp_path: Path) -> None:
    result = load(tmp_path, "decorated_bad_id", """
        from shared.sdk import dag

        @dag(dag_id="team a/etl", schedule=None)
        def etl():
            pass
        etl()
    """)
    assert "The key 'team a/etl' has to be made of alphanumeric characters" in result.error
    assert result.error.endswith("(DAG 'team a/etl')"), result.error


# --- schedule_interval (Airflow 2) ---------------------------------------------------

@needs_compat
def test_schedule_interval_is_an_alias_of_schedule(tmp_path: Path) -> None:
    dags = loaded(load(tmp_path, "intervals", """
        from datetime import datetime, timedelta
        from airflow import DAG
        from airflow.decorators import dag, task
        from airflow.operators.empty import EmptyOperator

        with DAG("classic_cron", schedule_interval="0 6 * * *", start_date=datetime(2026, 1, 1)):
            EmptyOperator(task_id="t")
        with DAG("new_cron", schedule="0 6 * * *", start_date=datetime(2026, 1, 1)):
            EmptyOperator(task_id="t")

        @dag(schedule_interval=timedelta(hours=2), start_date=datetime(2026, 1, 1))
        def hourly():
            @task
            def t():
                return 1
            t()
        hourly()
    """))
    classic, new = serialize_dag(dags["classic_cron"]), serialize_dag(dags["new_cron"])
    assert classic["schedule"] == new["schedule"] is not None
    assert {k: v for k, v in classic.items() if k not in ("dag_id",)} == \
        {k: v for k, v in new.items() if k not in ("dag_id",)}
    assert dags["classic_cron"].schedule_interval == "0 6 * * *"
    assert serialize_dag(dags["hourly"])["schedule"] == \
        serialize_dag(DAG("x", schedule=timedelta(hours=2)))["schedule"]


def test_schedule_and_schedule_interval_together_fail_with_airflows_message(tmp_path: Path) -> None:
    path = write(tmp_path, "both", """
        from shared.sdk import DAG, dag

        @dag(schedule="@daily", schedule_interval="@hourly")
        def both():
            pass
        both()
    """)
    result = load_file(path, tmp_path)
    assert result.dags == []
    assert result.error == (
        f"{path}:7: ValueError: At most one allowed for args 'schedule_interval', 'timetable', "
        "and 'schedule'. (DAG 'both')")
    # As in Airflow 2: a falsy schedule does not count as given, an explicit one still wins.
    assert DAG("explicit_none", schedule=None, schedule_interval="@daily").timetable is None
    assert DAG("interval_only", schedule_interval="@daily").timetable is not None
    assert DAG("neither").timetable is None


# --- pendulum start dates ------------------------------------------------------------

@needs_compat
def test_pendulum_start_dates_load_and_serialize_in_utc(tmp_path: Path) -> None:
    dags = loaded(load(tmp_path, "pendulum_dates", """
        import pendulum
        from airflow.decorators import dag, task
        from airflow.models.dag import DAG
        from airflow.operators.empty import EmptyOperator

        @dag(schedule="@daily", start_date=pendulum.datetime(2021, 1, 1, tz="UTC"), catchup=False)
        def in_utc():
            @task
            def t():
                return 1
            t()
        in_utc()

        with DAG("in_paris", schedule="0 6 * * *",
                 start_date=pendulum.datetime(2021, 1, 1, tz="Europe/Paris"),
                 end_date=pendulum.datetime(2030, 6, 1, 12, tz="Europe/Paris")):
            EmptyOperator(task_id="t")
    """))
    utc, paris = dags["in_utc"], dags["in_paris"]
    assert type(utc.start_date) is datetime and utc.start_date == datetime(2021, 1, 1, tzinfo=UTC)
    assert paris.start_date == datetime(2020, 12, 31, 23, tzinfo=UTC)
    assert paris.end_date == datetime(2030, 6, 1, 10, tzinfo=UTC)
    assert paris.timezone.name == "Europe/Paris"
    spec = serialize_dag(paris)
    assert (spec["start_date"], spec["end_date"]) == \
        ("2020-12-31T23:00:00+00:00", "2030-06-01T10:00:00+00:00")
    assert DagSpec.model_validate(spec).start_date == pendulum.datetime(2021, 1, 1, tz="Europe/Paris")
    assert serialize_dag(utc)["start_date"] == "2021-01-01T00:00:00+00:00"


def test_naive_and_default_args_start_dates_are_utc() -> None:
    assert DAG("naive", start_date=datetime(2026, 1, 1)).start_date == \
        datetime(2026, 1, 1, tzinfo=UTC)
    from_args = DAG("from_args", default_args={
        "start_date": pendulum.datetime(2026, 1, 1, 1, tz="Europe/Paris")})
    assert from_args.start_date == datetime(2026, 1, 1, tzinfo=UTC)
    assert DAG("no_start").timezone is UTC
    with pytest.raises(TypeError) as not_a_date:
        DAG("text_start", start_date="2026-01-01")
    assert str(not_a_date.value) == "start_date must be a datetime, not str"
    assert not_a_date.value.__notes__ == ["DAG 'text_start'"]


# --- setup / teardown ----------------------------------------------------------------

@needs_compat
@pytest.mark.parametrize("source,message", [
    ("from airflow.decorators import dag, setup",
     "ImportError: cannot import name 'setup' from 'airflow.decorators': not supported by Sluice"),
    ("from airflow.sdk import teardown",
     "ImportError: cannot import name 'teardown' from 'airflow.sdk': not supported by Sluice"),
    ("from airflow.decorators import task\n@task.setup\ndef s():\n    pass",
     "AttributeError: @task.setup is not supported by Sluice"),
], ids=["setup", "teardown", "task.setup"])
def test_setup_and_teardown_decorators_say_not_supported(tmp_path: Path, source: str,
                                                         message: str) -> None:
    result = load(tmp_path, "setup_teardown", source + "\n# dag\n")
    assert result.dags == []
    assert message in result.error, result.error

