"""Upstream references as the scheduler's dependencies: an ``XComArg`` object links its
producer; the same reference used as a string is only a Jinja pull the Task SDK renders
at run time, and links nothing (as in Airflow)."""

from __future__ import annotations

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, XComArg

from tests.unit.conftest import spec_of


def test_a_reference_links_its_producer_and_its_string_form_does_not():
    with DAG("the_dag", schedule=None) as d:
        push = BashOperator(task_id="push", bash_command="echo 1")
        XComArg(push) >> BashOperator(task_id="after", bash_command="echo 2")
        BashOperator(task_id="argument", bash_command=push.output)
        BashOperator(task_id="keyed", bash_command=XComArg(push, key="k"))
        BashOperator(task_id="stringly", bash_command=f"echo {push.output}")
    assert str(push.output) == (
        "{{ task_instance.xcom_pull(task_ids='push', dag_id='the_dag', key='return_value') }}")
    spec = spec_of(d)
    assert {t.task_id: t.upstream for t in spec.tasks} == {
        "push": [], "after": ["push"], "argument": ["push"], "keyed": ["push"], "stringly": []}
    assert spec.task("push").downstream == ["after", "argument", "keyed"]
