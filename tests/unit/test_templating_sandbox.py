"""Task templates render in a sandbox: attribute escapes fail the task instance, clearly.

Runner tests go through ``TaskRunner.run`` (``run_instance`` of the mapping-template
tests), so the failure is the try's stored error, as a worker would record it.
"""

from __future__ import annotations

import pytest
from jinja2.sandbox import SecurityError

from scheduler.start_trigger import render
from shared.sdk import macros
from shared.sdk.templating import render_string
from tests.unit.test_mapping_templates import run_instance

ESCAPE = "{{ ''.__class__.__mro__[1].__subclasses__() }}"


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("template", [
    ESCAPE,
    "{{ macros.uuid.os.getcwd() }}",  # a module reached through another module
    "{{ macros.random._os.getcwd() }}",
    "{{ macros.uuid._get_command_stdout('id') }}",
    "{{ macros.ds_add.__globals__ }}",
])
def test_escapes_are_refused(template, native):
    with pytest.raises(SecurityError, match="is unsafe"):
        render_string(template, {"macros": macros}, native=native)


def test_what_templates_use_still_renders():
    context = {"macros": macros, "ds": "2026-03-04", "params": {"n": 2}}
    assert render_string("{{ macros.ds_add(ds, params.n) }} {{ macros.json.dumps([1]) }} "
                         "{{ macros.dateutil.relativedelta.relativedelta(days=1).days }}",
                         context) == "2026-03-06 [1] 1"
    assert render_string("{{ [params.n, 3] }}", context, native=True) == [2, 3]


def test_the_scheduler_renders_trigger_kwargs_in_the_same_sandbox():
    assert render({"at": "{{ macros.ds_add('2026-03-04', 1) }}"}, {"macros": macros}) == {
        "at": "2026-03-05"}
    with pytest.raises(SecurityError):
        render({"cmd": "{{ macros.uuid.os.getcwd() }}"}, {"macros": macros})


DAG = f'''
from datetime import datetime
from shared.sdk import BashOperator, dag, task

@task(map_index_template="x")
def pick(x):
    return x

@dag(dag_id="flow", start_date=datetime(2026, 1, 1), render_template_as_native_obj=True)
def flow():
    BashOperator(task_id="escape", bash_command="echo {ESCAPE}", retries=0)
    BashOperator.partial(task_id="mapped", env={{"X": "{ESCAPE}"}}).expand(
        bash_command=["echo ok"])

flow()
'''


@pytest.mark.parametrize(("task_id", "map_index", "field"), [
    ("escape", -1, "bash_command"), ("mapped", 0, "env")])
def test_an_escape_fails_the_task_instance_naming_the_field(tmp_path, task_id, map_index, field):
    result = run_instance(tmp_path, DAG, task_id, map_index)
    assert result["outcome"] == "retry"
    assert result["error"] == (
        f"SecurityError: template of {field!r} refused by the sandbox: "
        "access to attribute '__class__' of 'str' object is unsafe.")
