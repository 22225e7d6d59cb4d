"""Mapping errors raised while a DAG file loads: Airflow's exact types and messages.

SEMANTICS.md §1 lists them; AIRFLOW-REFERENCE.md §1.2 gives the exact text
where SEMANTICS is silent. A DAG file raising one of them becomes that file's
import error (``shared.dagbag.load_file``; the scheduler stores it as an
``import_error`` row) and breaks nothing else.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from scheduler.parsing import parse_file, store_result
from shared.dagbag import load_file
from shared.db import create_pool
from shared.sdk import BashOperator, PythonOperator, TaskGroup, TriggerRule, task, task_group
from tests.unit.conftest import gen, show

START = datetime(2026, 1, 1)





@task
def anything(**kwargs):
    return kwargs


@task
def with_context(x=None, run_id=None, ti=None, ds=None):
    return x


def raised(call) -> tuple[type, str]:
    with pytest.raises(Exception) as info:  # noqa: B017 - the type is asserted by the caller
        call()
    return type(info.value), str(info.value)


# --- the cases moved from test_mapping.py (substring assertions kept) ---------------------------

@pytest.mark.parametrize("call,exc,message", [
    (lambda: BashOperator.partial(task_id="t").expand(), TypeError, "no arguments to expand against"),
    (lambda: BashOperator.partial(task_id="t").expand(bash_command=1), ValueError,
     "BashOperator.expand() got an unexpected type 'int' for keyword argument bash_command"),
    (lambda: BashOperator.partial(task_id="t").expand(bash_command="echo"), ValueError,
     "BashOperator.expand() got an unexpected type 'str' for keyword argument bash_command"),
    (lambda: BashOperator.partial(task_id="t").expand(file=[1]), TypeError,
     "BashOperator.expand() got an unexpected keyword argument 'file'"),
    (lambda: BashOperator.partial(task_id="t", foo=1, bar=2), TypeError,
     "BashOperator.partial() got unexpected keyword arguments 'foo', 'bar'"),
    (lambda: BashOperator.partial(task_id="t").expand(task_id=["a"]), TypeError,
     "unmappable or already specified argument: task_id"),
    (lambda: BashOperator.partial(task_id="t").expand(pool=["a"], queue=["b"]), TypeError,
     "unmappable or already specified arguments: pool, queue"),
    (lambda: BashOperator.partial(task_id="t", env={}).expand(env=[{}]), TypeError,
     "unmappable or already specified argument: env"),
    (lambda: show.expand(c=[1]), TypeError, "expand() got an unexpected keyword argument 'c'"),
    (lambda: show.expand(a="abc"), ValueError,
     "expand() got an unexpected type 'str' for keyword argument 'a'"),
    (lambda: show.partial(a=1).expand(a=[1]), TypeError, "mapping already partial argument: a"),
    (lambda: show.partial(a=1).partial(a=2), TypeError, "duplicate partial argument: a"),
    (lambda: show.expand_kwargs(3), TypeError, "expected XComArg or list[dict], not int"),
    (lambda: gen().map(show), ValueError,
     "map() argument must be a plain function, not a @task operator"),
    (lambda: show.expand(a=gen()["other"]), ValueError, "cannot map over XCom with custom key 'other'"),
    (lambda: show.override(trigger_rule="always").expand(a=gen()), ValueError,
     "Task-generated mapping within a task using 'expand' is not allowed with trigger rule 'always'."),
])
def test_parse_time_errors(in_dag, call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert message in str(info.value)


def test_context_names_cannot_be_mapped(in_dag):
    @task
    def uses(run_id=None, x=None):
        return x

    with pytest.raises(ValueError, match="cannot call expand\\(\\) on task context variable 'run_id'"):
        uses.expand(run_id=["a"])


# --- classic operators: exact messages --------------------------------------------------------

@pytest.mark.parametrize("call,exc,message", [
    pytest.param(lambda: BashOperator.partial(task_id="t").expand(), TypeError,
                 "no arguments to expand against", id="no-arguments"),
    pytest.param(lambda: PythonOperator.partial(task_id="t", python_callable=print).expand(op_args=1),
                 ValueError,
                 "PythonOperator.expand() got an unexpected type 'int' for keyword argument op_args",
                 id="int"),
    pytest.param(lambda: BashOperator.partial(task_id="t").expand(bash_command="echo"), ValueError,
                 "BashOperator.expand() got an unexpected type 'str' for keyword argument bash_command",
                 id="str"),
    pytest.param(lambda: BashOperator.partial(task_id="t").expand(bash_command=b"echo"), ValueError,
                 "BashOperator.expand() got an unexpected type 'bytes' for keyword argument bash_command",
                 id="bytes"),
    pytest.param(lambda: BashOperator.partial(task_id="t").expand(bash_command={"echo"}), ValueError,
                 "BashOperator.expand() got an unexpected type 'set' for keyword argument bash_command",
                 id="set"),
    pytest.param(lambda: BashOperator.partial(task_id="t").expand(file=[1]), TypeError,
                 "BashOperator.expand() got an unexpected keyword argument 'file'", id="unknown-one"),
    pytest.param(lambda: BashOperator.partial(task_id="t").expand(file=[1], other=[2]), TypeError,
                 "BashOperator.expand() got unexpected keyword arguments 'file', 'other'",
                 id="unknown-several"),
    pytest.param(lambda: BashOperator.partial(task_id="t", foo=1), TypeError,
                 "BashOperator.partial() got an unexpected keyword argument 'foo'",
                 id="partial-unknown-one"),
    pytest.param(lambda: BashOperator.partial(task_id="t", foo=1, bar=2), TypeError,
                 "BashOperator.partial() got unexpected keyword arguments 'foo', 'bar'",
                 id="partial-unknown-several"),
    pytest.param(lambda: BashOperator.partial(task_id="t", env={}).expand(env=[{}]), TypeError,
                 "unmappable or already specified argument: env", id="partial-clash-one"),
    pytest.param(lambda: BashOperator.partial(task_id="t", env={}, cwd="/").expand(
                     env=[{}], cwd=["/tmp"], bash_command=["x"]), TypeError,
                 "unmappable or already specified arguments: cwd, env", id="partial-clash-sorted"),
    pytest.param(lambda: BashOperator.partial(task_id="t").expand(pool=["a"], queue=["b"]), TypeError,
                 "unmappable or already specified arguments: pool, queue", id="base-args-several"),
])
def test_operator_expand_errors_are_airflows_exactly(in_dag, call, exc, message):
    assert raised(call) == (exc, message)


UNMAPPABLE = ["task_id", "pool", "queue", "retries", "retry_delay", "trigger_rule",
              "execution_timeout", "priority_weight", "max_active_tis_per_dag", "map_index_template"]


@pytest.mark.parametrize("name", UNMAPPABLE)
def test_base_operator_arguments_are_not_mappable(in_dag, name):
    call = lambda: BashOperator.partial(task_id="t").expand(**{name: ["x"]})  # noqa: E731
    assert raised(call) == (TypeError, f"unmappable or already specified argument: {name}")


def test_the_few_mappable_base_operator_arguments_are_accepted(in_dag):
    """Airflow maps ``do_xcom_push``, ``multiple_outputs``, ``email_on_*`` and ``params``."""
    op = BashOperator.partial(task_id="t").expand(
        bash_command=["x"], do_xcom_push=[True, False], params=[{"a": 1}], email_on_retry=[False],
        email_on_failure=[False], multiple_outputs=[False])
    assert op.serialize_mapping()["inputs"][1] == {"key": "do_xcom_push", "length": 2}


def test_custom_xcom_key_is_refused_naming_the_producer(in_dag):
    kind, message = raised(lambda: show.expand(a=gen()["other"]))
    assert kind is ValueError
    assert message.startswith("cannot map over XCom with custom key 'other' from <")
    assert "gen" in message
    kind, message = raised(lambda: show.expand_kwargs(gen()["other"]))
    assert kind is ValueError and message.startswith("cannot map over XCom with custom key 'other'")


# --- taskflow: exact messages -----------------------------------------------------------------

@pytest.mark.parametrize("call,exc,message", [
    pytest.param(lambda: show.expand(), TypeError, "no arguments to expand against", id="no-arguments"),
    pytest.param(lambda: show.partial(b=1).expand(), TypeError, "no arguments to expand against",
                 id="no-arguments-after-partial"),
    pytest.param(lambda: show.expand(a=1), ValueError,
                 "expand() got an unexpected type 'int' for keyword argument 'a'", id="int"),
    pytest.param(lambda: show.expand(a="abc"), ValueError,
                 "expand() got an unexpected type 'str' for keyword argument 'a'", id="str"),
    pytest.param(lambda: show.expand(a=None), ValueError,
                 "expand() got an unexpected type 'NoneType' for keyword argument 'a'", id="none"),
    pytest.param(lambda: show.expand(c=[1]), TypeError,
                 "expand() got an unexpected keyword argument 'c'", id="unknown-one"),
    pytest.param(lambda: show.expand(c=[1], d=[2]), TypeError,
                 "expand() got unexpected keyword arguments 'c', 'd'", id="unknown-several"),
    pytest.param(lambda: show.partial(c=1), TypeError,
                 "partial() got an unexpected keyword argument 'c'", id="partial-unknown"),
    pytest.param(lambda: show.partial(a=1).expand(a=[1]), TypeError,
                 "mapping already partial argument: a", id="partial-clash"),
    pytest.param(lambda: show.partial(a=1).partial(a=2), TypeError,
                 "duplicate partial argument: a", id="partial-twice"),
])
def test_taskflow_expand_errors_are_airflows_exactly(in_dag, call, exc, message):
    assert raised(call) == (exc, message)


def test_any_name_maps_into_a_function_taking_kwargs(in_dag):
    out = anything.partial(fixed=1).expand(x=[1, 2], y=[3])
    assert out.operator.serialize_mapping()["inputs"] == [{"key": "x", "length": 2},
                                                          {"key": "y", "length": 1}]
    anything.expand_kwargs([{"whatever": 1}])


@pytest.mark.parametrize("name", ["run_id", "ti", "ds"])
@pytest.mark.parametrize("where", ["expand", "partial"])
def test_context_names_cannot_be_mapped_or_partial(in_dag, name, where):
    call = (lambda: with_context.expand(**{name: ["v"]})) if where == "expand" else (
        lambda: with_context.partial(**{name: "v"}))
    assert raised(call) == (ValueError, f"cannot call {where}() on task context variable '{name}'")


def test_context_names_are_refused_whatever_the_signature(in_dag):
    assert raised(lambda: anything.expand(run_id=["a"])) == (
        ValueError, "cannot call expand() on task context variable 'run_id'")
    assert raised(lambda: show.expand(ti=["a"])) == (
        ValueError, "cannot call expand() on task context variable 'ti'")


def test_several_context_names_are_all_named(in_dag):
    assert raised(lambda: anything.expand(run_id=["a"], ti=["b"])) == (
        ValueError, "cannot call expand() on task context variables 'run_id', 'ti'")


def test_the_note_names_the_task_or_group_by_its_full_id(in_dag):
    @task_group
    def grp(a):
        show(a)

    with TaskGroup("tg"):
        with pytest.raises(ValueError) as info:
            BashOperator.partial(task_id="x").expand(bash_command=1)
        assert info.value.__notes__ == ["task 'tg.x' of DAG 'd'"]
        with pytest.raises(TypeError) as info:
            show.override(task_id="s").partial(a=1).expand(a=[2])
        assert info.value.__notes__ == ["task 'tg.s' of DAG 'd'"]
        with pytest.raises(TypeError) as info:
            grp.expand()
        assert (str(info.value), info.value.__notes__) == (
            "no arguments to expand against", ["task group 'tg.grp' of DAG 'd'"])


@pytest.mark.parametrize("value,shown", [
    (3, "int"), ("abc", "str"), ({"a": 1}, "dict"), (None, "NoneType"),
    ([1, 2], "list"), ([{"a": 1}, 2], "list"),
])
def test_expand_kwargs_needs_an_xcomarg_or_a_list_of_dicts(in_dag, value, shown):
    expected = (TypeError, f"expected XComArg or list[dict], not {shown}")
    assert raised(lambda: show.expand_kwargs(value)) == expected
    assert raised(lambda: BashOperator.partial(task_id="t").expand_kwargs(value)) == expected


def test_map_refuses_a_task(in_dag):
    assert raised(lambda: gen().map(show)) == (
        ValueError, "map() argument must be a plain function, not a @task operator")
    assert raised(lambda: gen().map(show.override(task_id="other"))) == (
        ValueError, "map() argument must be a plain function, not a @task operator")


# --- trigger_rule="always" with an upstream-driven expand ----------------------------------------

ALWAYS = "Task-generated mapping within a task using '{}' is not allowed with trigger rule 'always'."


@pytest.mark.parametrize("call,how", [
    (lambda: show.override(trigger_rule="always").expand(a=gen()), "expand"),
    (lambda: task(trigger_rule=TriggerRule.ALWAYS)(lambda a: a).expand(a=gen()), "expand"),
    (lambda: show.override(trigger_rule="always").partial(b=1).expand(a=gen().map(str)), "expand"),
    (lambda: show.override(trigger_rule="always").expand(a=[1], b=gen().zip(gen())), "expand"),
    (lambda: show.override(trigger_rule="always").expand_kwargs(gen()), "expand_kwargs"),
    (lambda: BashOperator.partial(task_id="t", trigger_rule="always").expand(bash_command=gen()),
     "expand"),
    (lambda: BashOperator.partial(task_id="t", trigger_rule=TriggerRule.ALWAYS).expand_kwargs(gen()),
     "expand_kwargs"),
])
def test_always_with_an_upstream_driven_expand_is_refused(in_dag, call, how):
    assert raised(call) == (ValueError, ALWAYS.format(how))


def test_always_with_literal_values_is_allowed(in_dag):
    show.override(trigger_rule="always").expand(a=[1, 2])
    show.override(trigger_rule="always").expand_kwargs([{"a": 1}])
    op = BashOperator.partial(task_id="t", trigger_rule="always").expand(bash_command=["x"])
    assert op.trigger_rule == TriggerRule.ALWAYS


def test_always_with_xcomargs_inside_literal_expand_kwargs_is_refused(in_dag):
    call = lambda: show.override(trigger_rule="always").expand_kwargs([{"a": gen(), "b": gen()}])  # noqa: E731
    assert raised(call) == (ValueError, ALWAYS.format("expand_kwargs"))


# --- a broken DAG file is an import error naming where -------------------------------------------

# Each import error: Airflow's exact "<Type>: <message>", then the task and DAG (a note on the
# exception, shown in parentheses: DESIGN.md rule 5, errors name the DAG and task).
BAD_FILES = {
    "int_value": ("BashOperator.partial(task_id='echo').expand(bash_command=1)",
                  "ValueError: BashOperator.expand() got an unexpected type 'int' for keyword argument "
                  "bash_command (task 'echo' of DAG 'int_value')"),
    "base_arg": ("BashOperator.partial(task_id='echo').expand(bash_command=['x'], retries=[1])",
                 "TypeError: unmappable or already specified argument: retries "
                 "(task 'echo' of DAG 'base_arg')"),
    "taskflow_clash": ("one.partial(x=1).expand(x=[2])",
                       "TypeError: mapping already partial argument: x (task 'one' of DAG 'taskflow_clash')"),
    "context_name": ("ctx.expand(run_id=['r'])",
                     "ValueError: cannot call expand() on task context variable 'run_id' "
                     "(task 'ctx' of DAG 'context_name')"),
    "always": ("one.override(trigger_rule='always').expand(x=make())",
               f"ValueError: {ALWAYS.format('expand')} (task 'one' of DAG 'always')"),
    "no_arguments": ("one.expand()", "TypeError: no arguments to expand against (task 'one' of DAG 'no_arguments')"),
}


def write_dag(folder: Path, name: str, statement: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(
        "from datetime import datetime\n"
        "from shared.sdk import BashOperator, dag, task\n"
        "\n"
        "@task\n"
        "def make():\n    return [1, 2]\n"
        "\n"
        "@task\n"
        "def one(x):\n    return x\n"
        "\n"
        "@task\n"
        "def ctx(x=None, run_id=None):\n    return x\n"
        "\n"
        f"@dag(dag_id={name!r}, start_date=datetime(2026, 1, 1))\n"
        f"def {name}():\n"
        "    make()\n"
        f"    {statement}\n"
        "\n"
        f"{name}()\n")
    return path


def line_of(path: Path, statement: str) -> int:
    return path.read_text().splitlines().index(f"    {statement}") + 1


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_mapping_error_becomes_the_files_import_error_at_its_line(tmp_path, name):
    statement, detail = BAD_FILES[name]
    path = write_dag(tmp_path, name, statement)
    result = load_file(path, tmp_path)
    assert result.dags == []
    assert result.error == f"{path.resolve()}:{line_of(path, statement)}: {detail}"


def test_the_import_error_names_the_task_and_dag(tmp_path):
    statement, _ = BAD_FILES["int_value"]
    path = write_dag(tmp_path, "int_value", statement)
    result = load_file(path, tmp_path)
    detail = result.error.split(f":{line_of(path, statement)}: ", 1)[1]
    assert "'echo'" in detail and "'int_value'" in detail


async def test_the_scheduler_records_the_import_error_and_no_dag(tmp_path, db_url, db):
    statement = BAD_FILES["taskflow_clash"][0]
    path = write_dag(tmp_path, "taskflow_clash", statement)
    result = await parse_file(path, tmp_path, timeout_s=60)
    pool = await create_pool(db_url, min_size=1, max_size=1)
    try:
        assert await store_result(pool, result) is False
    finally:
        await pool.close()
    rows = await db.fetch("SELECT fileloc, message FROM import_error")
    assert [tuple(r) for r in rows] == [
        (str(path.resolve()),
         f"{path.resolve()}:{line_of(path, statement)}: TypeError: mapping already partial argument: x "
         "(task 'one' of DAG 'taskflow_clash')")]
    assert await db.fetchval("SELECT count(*) FROM dag") == 0
