"""Effective priorities by weight_rule, and task settings Sluice refuses rather than ignores."""

from __future__ import annotations

from datetime import datetime

import pytest

from shared.sdk import DAG, EmptyOperator
from shared.serialization import serialize_dag


def weights(dag: DAG) -> dict[str, int]:
    return {t["task_id"]: t["priority_weight"] for t in serialize_dag(dag)["tasks"]}


def test_each_weight_rule_sums_what_airflow_sums():
    with DAG("w", start_date=datetime(2026, 1, 1)) as dag:
        a = EmptyOperator(task_id="a", priority_weight=2)
        b = EmptyOperator(task_id="b", weight_rule="upstream", priority_weight=3)
        c = EmptyOperator(task_id="c", weight_rule="absolute", priority_weight=5)
        e = EmptyOperator(task_id="e")
        a >> [b, c] >> e
    assert weights(dag) == {"a": 2 + 3 + 5 + 1, "b": 3 + 2, "c": 5, "e": 1}


def test_a_shared_descendant_counts_once():
    with DAG("diamond", start_date=datetime(2026, 1, 1)) as dag:
        top, left, right, bottom = (EmptyOperator(task_id=t) for t in ("top", "l", "r", "bottom"))
        top >> [left, right] >> bottom
    assert weights(dag)["top"] == 4


def test_a_chain_of_thousands_of_tasks_serializes():
    with DAG("chain", start_date=datetime(2026, 1, 1)) as dag:
        previous = None
        for i in range(3000):
            current = EmptyOperator(task_id=f"t{i}")
            if previous is not None:
                previous >> current
            previous = current
    found = weights(dag)
    assert (found["t0"], found["t2999"]) == (3000, 1)


def test_an_unknown_weight_rule_is_refused():
    with DAG("bad", start_date=datetime(2026, 1, 1)), \
            pytest.raises(ValueError, match="The weight_rule must be one of"):
        EmptyOperator(task_id="t", weight_rule="sideways")


@pytest.mark.parametrize("flag", ["depends_on_past", "wait_for_downstream"])
def test_settings_sluice_does_not_implement_fail_at_load_by_name(flag):
    with DAG("past", start_date=datetime(2026, 1, 1)), \
            pytest.raises(NotImplementedError, match=f"{flag}=True .task 't'. is not supported"):
        EmptyOperator(task_id="t", **{flag: True})
    with DAG("past_off", start_date=datetime(2026, 1, 1)):
        EmptyOperator(task_id="t", **{flag: False})  # the default, often in default_args


def test_setup_and_teardown_say_they_are_not_supported():
    from shared.sdk import task

    @task
    def make():
        return 1

    with DAG("st", start_date=datetime(2026, 1, 1)):
        op = EmptyOperator(task_id="op")
        with pytest.raises(AttributeError, match=r"as_setup\(\) is not supported by Sluice"):
            op.as_setup()
        with pytest.raises(AttributeError, match=r"as_teardown\(\) is not supported by Sluice"):
            make().as_teardown()
