"""Templates of mapped tasks: ``map_index_template`` and Airflow's rendering rules.

The rules live in ``MappedOperator.unmap`` (shared/sdk/mapped.py): ``partial()``
values in ``template_fields`` are rendered, literal ``expand()`` values are,
upstream ``expand()`` values are not, ``expand_kwargs()`` values always are.
The label is rendered by the task runner (``_label`` in worker/runner.py)
after the body ran, against the context the body changed. Runner tests go
through ``TaskRunner.run`` with a fake of its RPC boundary to the worker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from shared.runs_cli import _print_run
from shared.runview import run_document
from shared.sdk import BashOperator, task
from tests.unit.conftest import Values, show
from worker.runner import TaskRunner, _label

CONTEXT = {"run_id": "r1", "params": {}}





@task
def gen():
    return ["{{ run_id }}"]


# --- moved from test_mapping.py ----------------------------------------------------------------

def test_unmap_runs_init_with_the_index_values_and_templates(in_dag):
    op = BashOperator.partial(task_id="b", env={"X": "{{ run_id }}"}).expand(
        bash_command=["echo {{ run_id }}", "echo two"])
    real = op.unmap(0, Values(), {"run_id": "r1", "params": {}})
    assert (type(real), real.task_id, real.bash_command, real.env) == (BashOperator, "b", "echo r1", {"X": "r1"})
    upstream = BashOperator.partial(task_id="c").expand(bash_command=gen())
    assert upstream.unmap(1, Values(gen=["echo {{ run_id }}", "x"]), {"run_id": "r1"}).bash_command == "x"
    assert upstream.unmap(0, Values(gen=["echo {{ run_id }}", "x"]), {"run_id": "r1"}).bash_command == "echo {{ run_id }}"


# --- partial() ---------------------------------------------------------------------------------

def test_partial_values_are_rendered_only_in_template_fields(in_dag):
    op = BashOperator.partial(task_id="b", cwd="/{{ run_id }}", output_encoding="{{ run_id }}").expand(
        bash_command=["x"])
    real = op.unmap(0, Values(), CONTEXT)
    assert (real.cwd, real.output_encoding) == ("/r1", "{{ run_id }}")
    flow = show.partial(b="{{ run_id }}").expand(a=[1])
    assert flow.operator.unmap(0, Values(), CONTEXT).op_kwargs == {"b": "r1", "a": 1}


# --- expand() ------------------------------------------------------------------------------------

def test_literal_expand_values_are_rendered_nested_too(in_dag):
    flow = show.expand(a=["{{ run_id }}", ["s", "{{ run_id }}"], {"k": "{{ run_id }}"}])
    assert [flow.operator.unmap(i, Values(), CONTEXT).op_kwargs["a"] for i in range(3)] == [
        "r1", ["s", "r1"], {"k": "r1"}]
    classic = BashOperator.partial(task_id="b").expand(
        bash_command=["echo {{ run_id }}"], env=[{"A": "{{ run_id }}"}],
        output_encoding=["{{ run_id }}"])
    real = classic.unmap(0, Values(), CONTEXT)
    assert (real.bash_command, real.env, real.output_encoding) == (
        "echo r1", {"A": "r1"}, "{{ run_id }}")  # not a template field: left alone


def test_upstream_expand_values_are_not_rendered(in_dag):
    upstream = gen()
    flow = show.expand(a=upstream, b=["{{ run_id }}"])
    real = flow.operator.unmap(0, Values(gen=["{{ run_id }}"]), CONTEXT)
    assert real.op_kwargs == {"a": "{{ run_id }}", "b": "r1"}
    derived = show.expand(a=upstream.map(lambda v: v + "!").concat(upstream))
    assert [derived.operator.unmap(i, Values(gen=["{{ ds }}"]), CONTEXT).op_kwargs["a"]
            for i in range(2)] == ["{{ ds }}!", "{{ ds }}"]
    pairs = show.expand(a=upstream)
    assert pairs.operator.unmap(0, Values(gen={"{{ k }}": "{{ v }}"}), CONTEXT).op_kwargs["a"] == (
        "{{ k }}", "{{ v }}")


def test_the_unmapped_operator_is_not_rendered_again(in_dag):
    real = BashOperator.partial(task_id="b").expand(bash_command=gen()).unmap(
        0, Values(gen=["echo {{ run_id }}"]), CONTEXT)
    real.render_template_fields(CONTEXT)  # what the runner calls next
    assert real.bash_command == "echo {{ run_id }}"


# --- expand_kwargs() -----------------------------------------------------------------------------

def test_expand_kwargs_values_are_always_rendered(in_dag):
    literal = show.expand_kwargs([{"a": "{{ run_id }}"}, {"a": 2, "b": ["{{ run_id }}"]}])
    assert [literal.operator.unmap(i, Values(), CONTEXT).op_kwargs for i in range(2)] == [
        {"a": "r1"}, {"a": 2, "b": ["r1"]}]
    made = gen()
    upstream = show.expand_kwargs(made)
    assert upstream.operator.unmap(0, Values(gen=[{"a": "{{ run_id }}"}]), CONTEXT).op_kwargs == {
        "a": "r1"}
    classic = BashOperator.partial(task_id="b").expand_kwargs(made)
    real = classic.unmap(0, Values(gen=[{"bash_command": "echo {{ run_id }}",
                                         "output_encoding": "{{ run_id }}"}]), CONTEXT)
    assert (real.bash_command, real.output_encoding) == ("echo r1", "{{ run_id }}")


# --- the same rules in the runner (worker/runner.py) ------------------------------------------

class FakeWorker:
    """The worker's side of the runner's RPC, for an unmapped upstream ``make``."""

    def __init__(self, upstream: list):
        self.upstream = upstream

    def send(self, message):
        pass

    def call(self, method, **args):
        if method == "task_map_length":
            return len(self.upstream)
        if method == "xcom_item":
            return json.dumps({"value": self.upstream[args["index"]]})
        raise AssertionError(f"unexpected call {method}")


def run_instance(folder: Path, dag_file: str, task_id: str, map_index: int,
                 upstream: list | None = None) -> dict:
    (folder / "flow.py").write_text(dag_file)
    runner = TaskRunner(folder, FakeWorker(upstream or []), max_xcom_bytes=1 << 20)
    try:
        return runner.run({"fileloc": str(folder / "flow.py"), "dag_id": "flow", "task_id": task_id,
                           "map_index": map_index, "try_number": 1, "max_tries": 0,
                           "run_id": "r1", "run_type": "manual",
                           "logical_date": "2026-03-04T00:00:00+00:00"})
    finally:
        os.close(runner.stderr_fd)


RENDER_DAG = '''
from datetime import datetime
from shared.sdk import dag, task

@task
def make():
    return ["{{ ds }}"]

@task
def pair(a, b, c):
    return [a, b, c]

@dag(dag_id="flow", start_date=datetime(2026, 1, 1))
def flow():
    pair.partial(c="{{ ds }}").expand(a=make(), b=["{{ ds }}"])

flow()
'''


def test_the_runner_renders_partial_and_literal_values_but_not_upstream_ones(tmp_path):
    result = run_instance(tmp_path, RENDER_DAG, "pair", 0, upstream=["{{ ds }}"])
    assert result["outcome"] == "success"
    assert json.loads(result["xcoms"][0][1]) == ["{{ ds }}", "2026-03-04", "2026-03-04"]


# --- map_index_template ----------------------------------------------------------------------------

LABEL_DAG = '''
from datetime import datetime
from shared.sdk import AirflowSkipException, PythonOperator, dag, get_current_context, task

@task(map_index_template="{{ name }}-{{ ti.map_index }}")
def body(x):
    get_current_context()["name"] = x.upper()
    if x == "boom":
        raise RuntimeError("boom")
    if x == "skip":
        raise AirflowSkipException("skip")
    return x

@task(map_index_template="{{ never_set }}")
def broken(x):
    raise RuntimeError("body failed")

@task(map_index_template="{{ 1 / 0 }}", retries=0)
def fine_but_badly_named(x):
    return x

def echo(x):
    return x

@dag(dag_id="flow", start_date=datetime(2026, 1, 1))
def flow():
    body.expand(x=["ok", "boom", "skip"])
    broken.expand(x=[1])
    fine_but_badly_named.expand(x=[1])
    PythonOperator.partial(task_id="classic", python_callable=echo,
                           map_index_template="{{ task.op_args[0] }}@{{ ds }}").expand(
        op_args=[["first"], ["second"]])
    body.override(task_id="unlabelled", map_index_template=None).expand(x=["ok"])

flow()
'''


@pytest.mark.parametrize("map_index,outcome,label", [
    (0, "success", "OK-0"), (1, "retry", "BOOM-1"), (2, "skipped", "SKIP-2")])
def test_the_label_is_rendered_after_the_body_with_the_context_it_changed(
        tmp_path, map_index, outcome, label):
    result = run_instance(tmp_path, LABEL_DAG, "body", map_index)
    assert (result["outcome"], result["label"]) == (outcome, label)


def test_a_template_that_fails_to_render_after_a_failure_leaves_the_failure(tmp_path):
    result = run_instance(tmp_path, LABEL_DAG, "broken", 0)
    assert (result["outcome"], result["error"], result["label"]) == (
        "retry", "RuntimeError: body failed", None)


def test_a_template_that_fails_to_render_after_a_success_fails_the_try(tmp_path):
    """As in Airflow: after a successful body, the rendering error is the try's error."""
    result = run_instance(tmp_path, LABEL_DAG, "fine_but_badly_named", 0)
    assert (result["outcome"], result["label"]) == ("retry", None)
    assert result["error"] == "ZeroDivisionError: division by zero"
    assert result["xcoms"] == []  # the return value of a failed try is not stored


def test_a_classic_operator_label_sees_its_unmapped_self(tmp_path):
    labels = [run_instance(tmp_path, LABEL_DAG, "classic", i)["label"] for i in range(2)]
    assert labels == ["first@2026-03-04", "second@2026-03-04"]


def test_no_template_and_no_map_index_give_no_rendered_label(tmp_path):
    assert run_instance(tmp_path, LABEL_DAG, "unlabelled", 0)["label"] is None
    task_ = SimpleNamespace(map_index_template="{{ ti }}")
    assert _label(task_, {}, {"map_index": -1}) is None  # a placeholder or an unmapped task


def label_column(printed: str) -> dict[str, str]:
    """The ``label`` cell of each row of the ``runs show`` table (plain lines when piped),
    by its task cell: the cells under the header's ``label`` and ``return_value``."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("task "))
    state, label, after = (lines[start].index(f" {name} ") + 1
                           for name in ("state", "label", "return_value"))
    return {line[:state].strip(): line[label:after].strip() for line in lines[start + 1:]}


async def test_without_a_template_the_label_shown_is_the_index(db, capsys, monkeypatch):
    """SEMANTICS §1: without a template the label is the index -- in the ``runs show`` table.

    The JSON keeps ``label`` null then: DESIGN.md defines it as the rendered
    ``map_index_template``, and other tools read that document.
    """
    await db.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized)"
                     " VALUES ('d', 'd.py', 'h', '{}')")
    run_pk = await db.fetchval(
        "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state)"
        " VALUES ('d', 'r1', 'manual', now(), 'running') RETURNING id")
    await db.execute("INSERT INTO task_instance (run_pk, task_id, map_index, state, label) VALUES"
                     " ($1, 't', 0, 'success', 'named'), ($1, 't', 1, 'success', NULL),"
                     " ($1, 't', 2, 'success', ''), ($1, 'u', -1, 'success', NULL),"
                     " ($1, 'v', -1, 'scheduled', NULL)", run_pk)
    found = await run_document(db, "r1")
    assert [(t["task_id"], t["map_index"], t["label"]) for t in found["doc"]["tasks"]] == [
        ("t", 0, "named"), ("t", 1, None), ("t", 2, ""), ("u", -1, None), ("v", -1, None)]
    monkeypatch.setenv("COLUMNS", "200")
    _print_run(found, every_instance=True)
    assert label_column(capsys.readouterr().out) == {
        "t [0]": "named", "t [1]": "1", "t [2]": "", "u": "", "v": ""}
