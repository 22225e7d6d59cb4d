"""``XComArg`` as Airflow documents it: ``XComArg(op)`` builds a reference, and the reference
used as a string is the Jinja pull that a templated field renders at run time."""

from __future__ import annotations

from datetime import datetime

import pytest

from shared.sdk import DAG, BashOperator, XComArg, task
from shared.sdk.xcom_arg import PlainXComArg


@pytest.fixture
def push():
    with DAG("the_dag", start_date=datetime(2026, 1, 1)):
        yield BashOperator(task_id="push", bash_command="echo 1")


def test_a_reference_as_a_string_is_the_jinja_pull_of_its_value(push):
    assert str(push.output) == (
        "{{ task_instance.xcom_pull(task_ids='push', dag_id='the_dag', key='return_value') }}")


def test_an_f_string_carries_the_pull_of_another_key(push):
    assert f"echo got {push.output['k']}" == (
        "echo got {{ task_instance.xcom_pull(task_ids='push', dag_id='the_dag', key='k') }}")


def test_a_taskflow_result_in_a_group_names_its_full_task_id():
    from shared.sdk import TaskGroup

    @task
    def value():
        return 1

    with DAG("the_dag", start_date=datetime(2026, 1, 1)), TaskGroup("g"):
        ref = value()
    assert str(ref) == (
        "{{ task_instance.xcom_pull(task_ids='g.value', dag_id='the_dag', key='return_value') }}")


def test_the_constructor_builds_the_plain_reference(push):
    ref = XComArg(push)
    assert type(ref) is PlainXComArg
    assert isinstance(ref, XComArg)
    assert (ref.operator, ref.key) == (push, "return_value")
    assert XComArg(push, key="k").key == "k"
    assert XComArg(operator=push, key="k").operator is push


def test_a_constructed_reference_links_its_operator_like_output(push):
    with push.dag:
        after = BashOperator(task_id="after", bash_command="echo 2")
    XComArg(push) >> after
    assert after.upstream_task_ids == {"push"}


def test_the_constructor_needs_an_operator():
    with pytest.raises(TypeError):
        XComArg()


def test_derived_references_still_build(push):
    mapped = XComArg(push).map(str)
    assert type(mapped).__name__ == "MapXComArg"
    assert [r.operator for r in mapped.zip(push.output).iter_references()] == [push, push]
