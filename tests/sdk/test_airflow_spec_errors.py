"""Broken DAG files get Airflow's own import errors; what Sluice cannot schedule is refused by name.

And Airflow's home is Sluice's: parsing never writes to ``~/airflow``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from shared.airflow_spec import parse

ROOT = Path(__file__).resolve().parents[2]

HEAD = """\
from datetime import datetime, timedelta
from airflow.sdk import DAG, dag, task, task_group
from airflow.providers.standard.operators.empty import EmptyOperator
"""


def write(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(HEAD + textwrap.dedent(body))
    return path


def by_file(results: list[dict]) -> dict[str, dict]:
    return {Path(r["fileloc"]).name: r for r in results}


def test_a_syntax_error_is_airflows_import_error_with_the_line(tmp_path: Path):
    path = write(tmp_path, "syntax.py", "def broken(:\n    pass\n")
    [result] = parse(path, tmp_path)
    assert result["dags"] == []
    assert f'File "{path}", line 4' in result["error"]
    assert result["error"].rstrip().endswith("SyntaxError: invalid syntax")


def test_a_cycle_refuses_that_dag_with_airflows_message_and_keeps_the_others(tmp_path: Path):
    path = write(tmp_path, "cycle.py", """
        with DAG("fine", schedule=None, start_date=datetime(2026, 1, 1)):
            EmptyOperator(task_id="x")
        with DAG("cyclic", schedule=None, start_date=datetime(2026, 1, 1)):
            a, b = EmptyOperator(task_id="a"), EmptyOperator(task_id="b")
            a >> b >> a
    """)
    [result] = parse(path, tmp_path)
    assert result["error"] == "AirflowDagCycleException: Cycle detected in Dag: cyclic. Faulty task: b"
    assert [d["dag_id"] for d in result["dags"]] == ["fine"]


def test_a_dag_id_in_two_files_is_airflows_duplicate_error_on_one_of_them(tmp_path: Path):
    body = """
        with DAG("twice", schedule=None, start_date=datetime(2026, 1, 1)):
            EmptyOperator(task_id="x")
    """
    write(tmp_path, "one.py", body)
    write(tmp_path, "two.py", body)
    results = by_file(parse(tmp_path, tmp_path))
    errors = {name: r["error"] for name, r in results.items() if r["error"]}
    [(loser, message)] = errors.items()
    winner = ({"one.py", "two.py"} - {loser}).pop()
    assert message == (f"AirflowDagDuplicatedIdException: Ignoring DAG twice from "
                       f"{tmp_path / loser} - also found in {tmp_path / winner}")
    assert [d["dag_id"] for d in results[winner]["dags"]] == ["twice"]
    assert results[loser]["dags"] == []


def test_an_import_past_the_timeout_is_airflows_dagbag_import_timeout(tmp_path: Path):
    path = write(tmp_path, "slow.py", "import time\ntime.sleep(30)\n")
    started = time.monotonic()
    [result] = parse(path, tmp_path, timeout_s=1)
    assert time.monotonic() - started < 10
    assert f"DagBag import timeout for {path} after 1.0s." in result["error"]
    assert "AirflowTaskTimeout" in result["error"] and "time.sleep(30)" in result["error"]
    assert os.environ.get("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT") is None


def test_a_schedule_sluice_cannot_run_is_an_import_error_naming_dag_and_timetable(tmp_path: Path):
    """Airflow's own timetables all run (tests/unit/test_timetables_af3.py); a class of the
    DAG file's own (a timetable plugin's) is refused, the file's other DAGs loaded."""
    path = write(tmp_path, "tt.py", """
        from airflow.timetables.trigger import CronTriggerTimetable

        class EveryOtherHour(CronTriggerTimetable):
            pass

        with DAG("fine", start_date=datetime(2026, 1, 1),
                 schedule=CronTriggerTimetable("0 1 * * *", timezone="UTC",
                                               interval=timedelta(hours=1))):
            EmptyOperator(task_id="x")
        with DAG("custom", start_date=datetime(2026, 1, 1),
                 schedule=EveryOtherHour("0 */2 * * *", timezone="UTC")):
            EmptyOperator(task_id="x")
    """)
    [result] = parse(path, tmp_path)
    assert [d["dag_id"] for d in result["dags"]] == ["fine"]
    [custom] = result["error"].splitlines()
    assert custom.startswith(f"{path}: DAG 'custom': schedule ")
    assert "EveryOtherHour is not supported by Sluice (custom timetable classes" in custom


def test_an_upstream_output_for_start_from_trigger_is_refused_naming_dag_and_task(tmp_path: Path):
    path = write(tmp_path, "refused.py", """
        from airflow.sdk import BaseOperator
        from airflow.triggers.base import StartTriggerArgs

        class Starter(BaseOperator):
            start_trigger_args = StartTriggerArgs(
                trigger_cls="airflow.providers.standard.triggers.temporal.DateTimeTrigger",
                next_method="execute_complete")

            def __init__(self, *, trigger_kwargs=None, **kwargs):
                super().__init__(**kwargs)

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def refused():
            @task
            def kwargs_list():
                return [{"moment": "2026-01-01T00:00:00+00:00"}]

            Starter.partial(task_id="s").expand(trigger_kwargs=kwargs_list())

        refused()
    """)
    [result] = parse(path, tmp_path)
    assert result["dags"] == []
    assert result["error"] == (
        f"{path}: DAG 'refused': task 's': trigger_kwargs given to expand() comes from an "
        "upstream task's output; Sluice decides start_from_trigger in the scheduler before any "
        "task runs and never reads task outputs there, so it must be a literal value")


def _parse_in_child(env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    dags = tmp_path / "dags"
    write(dags, "hello.py", """
        with DAG("hello", schedule=None, start_date=datetime(2026, 1, 1)):
            EmptyOperator(task_id="x")
    """)
    code = ("import sys; from pathlib import Path; from shared.airflow_spec import parse; "
            f"r = parse(Path({str(dags)!r}), Path({str(dags)!r})); "
            "print([d['dag_id'] for f in r for d in f['dags']])")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_airflows_home_is_under_sluices_home_and_nothing_is_written_to_home_airflow(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(HOME=str(tmp_path / "user"), SLUICE_HOME=str(tmp_path / "sluice"))
    (tmp_path / "user").mkdir()
    done = _parse_in_child(env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['hello']"
    assert not (tmp_path / "user" / "airflow").exists()
    assert (tmp_path / "sluice" / "airflow").is_dir()
    assert os.listdir(tmp_path / "user") == []


def test_airflow_imported_before_its_home_was_chosen_is_refused(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(HOME=str(tmp_path / "user"), SLUICE_HOME=str(tmp_path / "sluice"))
    code = ("import sys; sys.modules['airflow'] = type(sys)('airflow'); "
            "from shared.airflow_spec.loading import use_airflow_home; use_airflow_home()")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert "airflow was imported before AIRFLOW_HOME was set" in done.stderr
    assert not (tmp_path / "user" / "airflow").exists()


def test_what_postgresql_cannot_store_is_the_files_import_error(tmp_path: Path):
    """A NaN in an asset's extra or a NUL in an asset's name would fail the scheduler's
    store of the DAG (json has no NaN, text no NUL): each is its DAG's import error."""
    path = write(tmp_path, "unstorable.py", """
        from airflow.sdk import Asset

        with DAG("nan_extra", start_date=datetime(2026, 1, 1),
                 schedule=[Asset("a", extra={"v": float("nan")})]):
            EmptyOperator(task_id="x")
        with DAG("nul_name", start_date=datetime(2026, 1, 1), schedule=None):
            EmptyOperator(task_id="x", outlets=[Asset("x\\x00y")])
        with DAG("fine", start_date=datetime(2026, 1, 1), schedule=None):
            EmptyOperator(task_id="x")
    """)
    [result] = parse(path, tmp_path)
    assert [d["dag_id"] for d in result["dags"]] == ["fine"]
    nan, nul = sorted(result["error"].splitlines())
    assert nan == f"{path}: DAG 'nan_extra': ['assets'][0]['extra']['v'] is nan, which JSON " \
                  "cannot hold"
    assert nul.startswith(f"{path}: DAG 'nul_name': [") and "contains a NUL character" in nul
