"""Mapping errors raised while a DAG file loads: what Airflow 3.3's Task SDK really raises.

``partial``/``expand``/``expand_kwargs`` are checked by ``airflow.sdk`` when the
DAG is defined; a DAG file raising one of them becomes that file's import
error, as Airflow's ``DagBag`` words it (``shared.airflow_spec.parse``; the
scheduler stores it as an ``import_error`` row) and breaks nothing else. Where
Airflow 3.3 lets a mapping through that Airflow 2 refused, the scheduler's
decisions for it are asserted instead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import TaskGroup, TriggerRule, task

from scheduler.decide import TIRow, decide
from scheduler.expansion import RunFacts
from scheduler.parsing import parse_file, store_result
from shared.airflow_spec import parse
from shared.db import create_pool
from tests.unit.conftest import gen, show, spec_of

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


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
    pytest.param(lambda: BashOperator.partial(task_id="t").expand(retries=[1], queue=["b"]),
                 TypeError, "unmappable or already specified arguments: queue, retries",
                 id="base-args-several"),
    pytest.param(lambda: BashOperator.partial(task_id="t").expand(
                     bash_command=["x"], email_on_retry=[False], email_on_failure=[False]),
                 TypeError, "unmappable or already specified arguments: email_on_failure, "
                 "email_on_retry", id="email-flags"),
])
def test_operator_expand_errors_are_airflows_exactly(in_dag, call, exc, message):
    assert raised(call) == (exc, message)


UNMAPPABLE = ["task_id", "queue", "retries", "retry_delay", "trigger_rule", "execution_timeout",
              "priority_weight", "map_index_template"]


@pytest.mark.parametrize("name", UNMAPPABLE)
def test_base_operator_arguments_are_not_mappable(in_dag, name):
    call = lambda: BashOperator.partial(task_id="t").expand(**{name: ["x"]})  # noqa: E731
    assert raised(call) == (TypeError, f"unmappable or already specified argument: {name}")


def test_the_mappable_base_operator_arguments_are_accepted_and_counted(in_dag):
    """Airflow 3.3 maps ``do_xcom_push``, ``multiple_outputs`` and ``params`` (and ``bytes``)."""
    BashOperator.partial(task_id="t").expand(
        bash_command=["x"], do_xcom_push=[True, False], params=[{"a": 1}], multiple_outputs=[False])
    BashOperator.partial(task_id="b").expand(bash_command=b"ab")
    tasks = {t.task_id: t for t in spec_of(in_dag).tasks}
    assert tasks["t"].mapped["inputs"] == [
        {"key": "bash_command", "length": 1}, {"key": "do_xcom_push", "length": 2},
        {"key": "params", "length": 1}, {"key": "multiple_outputs", "length": 1}]
    assert tasks["b"].mapped["inputs"] == [{"key": "bash_command", "length": 2}]


def test_a_mapped_pool_or_limit_loads_and_the_instances_keep_the_partial_ones(in_dag):
    """Airflow 3.3 accepts ``pool``/``max_active_tis_per_dag`` in ``expand``; its scheduler, like
    Sluice's, gives every instance the task's (``partial``) pool and limit, not the mapped ones."""
    BashOperator.partial(task_id="t", pool="p", max_active_tis_per_dag=3).expand(
        bash_command=["x", "y"])
    BashOperator.partial(task_id="u").expand(bash_command=["x", "y"], pool=["a", "b"],
                                             max_active_tis_per_dag=[1, 2])
    tasks = {t.task_id: t for t in spec_of(in_dag).tasks}
    assert (tasks["t"].pool, tasks["t"].max_active_tis_per_dag) == ("p", 3)
    assert (tasks["u"].pool, tasks["u"].max_active_tis_per_dag) == ("default_pool", None)
    assert [i["length"] for i in tasks["u"].mapped["inputs"]] == [2, 2, 2]


def test_custom_xcom_key_is_refused_naming_the_producer(in_dag):
    assert raised(lambda: show.expand(a=gen()["other"])) == (
        ValueError, "cannot map over XCom with custom key 'other' from "
                    "<Task(_PythonDecoratedOperator): gen>")
    kind, message = raised(lambda: show.expand_kwargs(gen()["other"]))
    assert kind is ValueError and message.startswith("cannot map over XCom with custom key 'other'")
    kind, message = raised(lambda: show.expand(a=gen().concat(gen()["other"])))
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
    pytest.param(lambda: show.partial(a=1).partial(a=2), TypeError,
                 "duplicate partial argument: a", id="partial-twice"),
    pytest.param(lambda: show.partial(a=1, b=2).partial(b=1, a=2), TypeError,
                 "duplicate partial arguments: a, b", id="partial-twice-several"),
])
def test_taskflow_expand_errors_are_airflows_exactly(in_dag, call, exc, message):
    assert raised(call) == (exc, message)


def test_a_taskflow_partial_and_expand_clash_loads(in_dag):
    """Airflow 3.3 expands ``@task`` with ``strict=False``: the clash is not refused at load
    (what the instance receives is the Task SDK's); the scheduler counts the expanded values."""
    show.partial(a=1).expand(a=[1, 2])
    show.partial(a=1, b=2).expand(b=[1], a=[2, 3, 4])
    tasks = {t.task_id: t for t in spec_of(in_dag).tasks}
    assert tasks["show"].mapped["inputs"] == [{"key": "a", "length": 2}]
    assert tasks["show__1"].mapped["inputs"] == [{"key": "b", "length": 1},
                                                 {"key": "a", "length": 3}]


def test_any_name_maps_into_a_function_taking_kwargs(in_dag):
    anything.partial(fixed=1).expand(x=[1, 2], y=[3])
    anything.expand_kwargs([{"whatever": 1}])
    tasks = {t.task_id: t for t in spec_of(in_dag).tasks}
    assert tasks["anything"].mapped["inputs"] == [{"key": "x", "length": 2},
                                                  {"key": "y", "length": 1}]
    assert tasks["anything__1"].mapped == {"kind": "list_of_dicts", "length": 1}


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
    kind, message = raised(lambda: anything.expand(run_id=["a"], ti=["b"]))
    assert kind is ValueError
    # Airflow names them in set order
    assert message in ("cannot call expand() on task context variables 'run_id', 'ti'",
                       "cannot call expand() on task context variables 'ti', 'run_id'")


def test_an_error_in_a_group_is_raised_as_is(in_dag):
    with TaskGroup("tg"):
        assert raised(lambda: BashOperator.partial(task_id="x").expand(bash_command=1)) == (
            ValueError,
            "BashOperator.expand() got an unexpected type 'int' for keyword argument bash_command")


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
    (lambda: show.override(trigger_rule="always").expand_kwargs([{"a": gen(), "b": gen()}]),
     "expand_kwargs"),
])
def test_taskflow_always_with_an_upstream_driven_expand_is_refused(in_dag, call, how):
    assert raised(call) == (ValueError, ALWAYS.format(how))


def test_always_with_literal_values_is_allowed(in_dag):
    show.override(trigger_rule="always").expand(a=[1, 2])
    show.override(trigger_rule="always").expand_kwargs([{"a": 1}])
    BashOperator.partial(task_id="t", trigger_rule="always").expand(bash_command=["x"])
    assert {t.task_id: t.trigger_rule for t in spec_of(in_dag).tasks} == {
        "show": "always", "show__1": "always", "t": "always"}


@pytest.mark.parametrize("build", [
    lambda: BashOperator.partial(task_id="use", trigger_rule="always").expand(bash_command=gen()),
    lambda: BashOperator.partial(task_id="use", trigger_rule=TriggerRule.ALWAYS).expand_kwargs(gen()),
    lambda: show.override(task_id="use", trigger_rule="always").expand_kwargs(gen()),
], ids=["operator-expand", "operator-expand-kwargs", "taskflow-expand-kwargs"])
def test_an_always_mapping_airflow_lets_through_still_waits_for_its_length(in_dag, build):
    """Airflow 3.3 refuses 'always' over an upstream only for ``@task`` ``expand``: for the
    forms it loads, the placeholder waits for the producer, expands once its length is
    known, and is upstream_failed when it failed -- never run before it is expanded."""
    build()
    spec = spec_of(in_dag)
    assert spec.task("use").trigger_rule == "always"
    for producer in (None, "queued", "running", "up_for_retry"):
        d = decide(spec, [TIRow(0, "gen", -1, producer), TIRow(1, "use", -1, None)], NOW,
                   RunFacts(task_map={"gen": 2}))
        assert 1 not in d.queue and (d.end, d.expand) == ({}, {})
    done = decide(spec, [TIRow(0, "gen", -1, "success"), TIRow(1, "use", -1, None)], NOW,
                  RunFacts(task_map={"gen": 2}))
    assert (done.queue, done.end, done.expand) == ([], {}, {1: 2})
    failed = decide(spec, [TIRow(0, "gen", -1, "failed"), TIRow(1, "use", -1, None)], NOW,
                    RunFacts())
    assert (failed.end, failed.run_state) == ({1: "upstream_failed"}, "failed")


# --- a broken DAG file is an import error ---------------------------------------------------------

BAD_FILES = {
    "int_value": ("BashOperator.partial(task_id='echo').expand(bash_command=1)",
                  "ValueError: BashOperator.expand() got an unexpected type 'int' for keyword "
                  "argument bash_command"),
    "base_arg": ("BashOperator.partial(task_id='echo').expand(bash_command=['x'], retries=[1])",
                 "TypeError: unmappable or already specified argument: retries"),
    "context_name": ("ctx.expand(run_id=['r'])",
                     "ValueError: cannot call expand() on task context variable 'run_id'"),
    "always": ("one.override(trigger_rule='always').expand(x=make())",
               f"ValueError: {ALWAYS.format('expand')}"),
    "no_arguments": ("one.expand()", "TypeError: no arguments to expand against"),
}


def write_dag(folder: Path, name: str, statement: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(
        "from datetime import datetime\n"
        "from airflow.sdk import dag, task\n"
        "from airflow.providers.standard.operators.bash import BashOperator\n"
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
        f"@dag(dag_id={name!r}, start_date=datetime(2026, 1, 1), schedule=None)\n"
        f"def {name}():\n"
        "    make()\n"
        f"    {statement}\n"
        "\n"
        f"{name}()\n")
    return path


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_mapping_error_becomes_the_files_import_error(tmp_path, isolated_dag_modules, name):
    statement, detail = BAD_FILES[name]
    path = write_dag(tmp_path, name, statement)
    (result,) = parse(path, tmp_path)
    assert (result["fileloc"], result["dags"]) == (str(path.resolve()), [])
    assert result["error"].startswith("Traceback (most recent call last):\n")
    assert result["error"].endswith(f"\n{detail}\n")


async def test_the_scheduler_records_the_import_error_and_no_dag(tmp_path, db_url, db):
    statement, detail = BAD_FILES["base_arg"]
    path = write_dag(tmp_path, "base_arg", statement)
    result = await parse_file(path, tmp_path, timeout_s=60)
    pool = await create_pool(db_url, min_size=1, max_size=1)
    try:
        assert await store_result(pool, result) is False
    finally:
        await pool.close()
    rows = await db.fetch("SELECT fileloc, message FROM import_error")
    assert [r["fileloc"] for r in rows] == [str(path.resolve())]
    assert rows[0]["message"].rstrip("\n").endswith(detail)
    assert await db.fetchval("SELECT count(*) FROM dag") == 0
