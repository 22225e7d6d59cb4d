"""The task runner's hooks around a body, in Airflow's order, and what a failed body leaves.

Each test runs one task of a DAG file through ``worker.runner.TaskRunner`` in
this process, with the worker's side of the pipe played by ``NoUpstream``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from worker.runner import TaskRunner

HOOKS_DAG = '''
from datetime import datetime
from pathlib import Path
from shared.sdk import AirflowFailException, BaseOperator, DAG

LOG = Path(__file__).with_name("events.txt")


class Events:
    def append(self, line):
        with LOG.open("a") as f:
            f.write(line + "\\n")


EVENTS = Events()


def note(what):
    def callback(context):
        exc = context.get("exception")
        EVENTS.append(what if exc is None else f"{what}: {type(exc).__name__}: {exc}")
    return callback


class Hooked(BaseOperator):
    def __init__(self, fail=None, **kwargs):
        super().__init__(**kwargs)
        self.fail = fail

    def pre_execute(self, context):
        EVENTS.append("pre_execute")

    def execute(self, context):
        EVENTS.append("execute")
        context["ti"].xcom_push("progress", 42)
        if self.fail == "retry":
            raise ValueError("source down")
        if self.fail == "final":
            raise AirflowFailException("bad input")
        return "done"

    def post_execute(self, context, result=None):
        EVENTS.append(f"post_execute {result}")


with DAG("hooks", start_date=datetime(2026, 1, 1)):
    for fail in (None, "retry", "final"):
        Hooked(task_id=f"hooked_{fail}", fail=fail, retries=1,
               on_execute_callback=note("on_execute"), on_success_callback=note("on_success"),
               on_retry_callback=note("on_retry"), on_failure_callback=note("on_failure"))
'''


class NoUpstream:
    def send(self, message):
        pass

    def call(self, method, **args):
        raise AssertionError(f"unexpected call {method}")


def run_task(folder: Path, dag_id: str, source: str, task_id: str, *, max_tries: int = 0,
             logical_date: str = "2026-03-04T00:00:00+00:00") -> dict:
    """One try of ``task_id`` of the DAG file ``folder/<dag_id>.py`` holding ``source``."""
    (folder / f"{dag_id}.py").write_text(source)
    runner = TaskRunner(folder, NoUpstream(), max_xcom_bytes=1 << 20)
    try:
        return runner.run({"fileloc": str(folder / f"{dag_id}.py"), "dag_id": dag_id,
                           "task_id": task_id, "map_index": -1, "try_number": 1,
                           "max_tries": max_tries, "run_id": "r1", "run_type": "manual",
                           "logical_date": logical_date})
    finally:
        os.close(runner.stderr_fd)


def run(folder: Path, task_id: str) -> tuple[dict, list[str]]:
    result = run_task(folder, "hooks", HOOKS_DAG, task_id, max_tries=1)
    return result, (folder / "events.txt").read_text().splitlines()


def xcoms(result: dict) -> dict:
    return {key: json.loads(value) for key, value in result.get("xcoms", [])}


def test_hooks_and_callbacks_run_in_airflows_order_around_a_successful_body(tmp_path):
    result, events = run(tmp_path, "hooked_None")
    assert result["outcome"] == "success"
    assert events == ["pre_execute", "on_execute", "execute", "post_execute done", "on_success"]
    assert xcoms(result) == {"progress": 42, "return_value": "done"}


def test_a_failing_body_keeps_what_it_pushed_and_its_callback_sees_the_exception(tmp_path):
    result, events = run(tmp_path, "hooked_retry")
    assert (result["outcome"], result["error"]) == ("retry", "ValueError: source down")
    assert events == ["pre_execute", "on_execute", "execute", "on_retry: ValueError: source down"]
    assert xcoms(result) == {"progress": 42}


def test_a_final_failure_keeps_what_it_pushed_and_its_callback_sees_the_exception(tmp_path):
    result, events = run(tmp_path, "hooked_final")
    assert result["outcome"] == "failed"
    assert events[-1] == "on_failure: AirflowFailException: bad input"
    assert xcoms(result) == {"progress": 42}


TEMPLATES_DAG = '''
from datetime import datetime
from shared.sdk import DAG, BashOperator

with DAG("templates", start_date=datetime(2026, 1, 1),
         user_defined_macros={"project": "lake", "ds": "never wins"},
         user_defined_filters={"shout": lambda s: s.upper() + "!"}):
    BashOperator(task_id="echo", bash_command=(
        "echo {{ macros.ds_add(ds, 7) }} {{ macros.ds_format(ds, '%Y-%m-%d', '%d/%m/%Y') }}"
        " {{ (macros.datetime(2026, 1, 2) - macros.timedelta(days=1)).day }}"
        " {{ project | shout }} {{ logical_date | ds_nodash }} {{ ts_nodash_with_tz }}"
        " {{ task_instance_key_str }} {{ ds }}"))
    BashOperator(task_id="native", bash_command="echo {{ logical_date | ds }}")
'''


def run_templates(folder: Path, task_id: str, native: bool = False) -> dict:
    source = TEMPLATES_DAG.replace('DAG("templates",', 'DAG("templates", render_template_as_native_obj=True,') \
        if native else TEMPLATES_DAG
    return run_task(folder, "templates", source, task_id,
                    logical_date="2026-03-04T05:06:07+00:00")


def test_airflows_macros_filters_and_the_dags_own_macros_render(tmp_path):
    result = run_templates(tmp_path, "echo")
    assert result["outcome"] == "success", result.get("error")
    assert xcoms(result)["return_value"] == (
        "2026-03-11 04/03/2026 1 LAKE! 20260304 20260304T050607+0000"
        " templates__echo__20260304 2026-03-04")


def test_the_date_filters_exist_in_native_rendering_too(tmp_path):
    result = run_templates(tmp_path, "native", native=True)
    assert (result["outcome"], xcoms(result)["return_value"]) == ("success", "2026-03-04")


BASH_DAG = '''
from datetime import datetime
from shared.sdk import DAG, BashOperator, task

with DAG("bashes", start_date=datetime(2026, 1, 1)):
    BashOperator(task_id="script", bash_command="hello.sh", env={"WHO": "{{ ds_nodash }}"})
    BashOperator(task_id="missing", bash_command="nowhere.sh")
    BashOperator(task_id="not_a_file", bash_command="echo hello.sh ")

    @task.bash(env={"DAY": "{{ ds_nodash }}"})
    def decorated():
        return "echo day=$DAY"

    decorated()
'''


def run_bash(folder: Path, task_id: str) -> dict:
    (folder / "hello.sh").write_text('echo "hello $WHO on {{ ds }}"\n')
    return run_task(folder, "bashes", BASH_DAG, task_id)


def test_a_bash_command_naming_a_script_runs_the_scripts_rendered_text(tmp_path):
    result = run_bash(tmp_path, "script")
    assert (result["outcome"], xcoms(result)["return_value"]) == (
        "success", "hello 20260304 on 2026-03-04")


def test_a_missing_script_fails_the_try_naming_where_it_looked(tmp_path):
    result = run_bash(tmp_path, "missing")
    assert result["outcome"] == "retry"
    assert "template 'nowhere.sh' of task 'missing' not found" in result["error"]


def test_a_command_ending_in_a_space_is_run_as_it_is(tmp_path):
    assert xcoms(run_bash(tmp_path, "not_a_file"))["return_value"] == "hello.sh"


def test_task_bash_renders_its_env(tmp_path):
    assert xcoms(run_bash(tmp_path, "decorated"))["return_value"] == "day=20260304"
