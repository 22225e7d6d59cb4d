"""Effective priorities by weight_rule, as the scheduler's spec carries them, and the task
settings Sluice loads without acting on them (README: "Not yet")."""

from __future__ import annotations

from datetime import datetime

import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from airflow.task.priority_strategy import PriorityWeightStrategy

from shared.airflow_spec import SpecError
from tests.unit.conftest import spec_of


def weights(dag: DAG) -> dict[str, int]:
    return {t.task_id: t.priority_weight for t in spec_of(dag).tasks}


def test_each_weight_rule_sums_what_airflow_sums():
    with DAG("w", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        a = EmptyOperator(task_id="a", priority_weight=2)
        b = EmptyOperator(task_id="b", weight_rule="upstream", priority_weight=3)
        c = EmptyOperator(task_id="c", weight_rule="absolute", priority_weight=5)
        e = EmptyOperator(task_id="e")
        a >> [b, c] >> e
    assert weights(dag) == {"a": 2 + 3 + 5 + 1, "b": 3 + 2, "c": 5, "e": 1}


def test_a_shared_descendant_counts_once():
    with DAG("diamond", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        top, left, right, bottom = (EmptyOperator(task_id=t) for t in ("top", "l", "r", "bottom"))
        top >> [left, right] >> bottom
    assert weights(dag)["top"] == 4


def test_a_chain_of_thousands_of_tasks_gets_its_spec():
    with DAG("chain", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        previous = None
        for i in range(3000):
            current = EmptyOperator(task_id=f"t{i}")
            if previous is not None:
                previous >> current
            previous = current
    found = weights(dag)
    assert (found["t0"], found["t2999"]) == (3000, 1)


class Custom(PriorityWeightStrategy):
    def get_weight(self, ti):
        return 1


@pytest.mark.parametrize("rule,shown", [("sideways", "'sideways'"), (Custom(), "<")])
def test_a_weight_rule_sluice_cannot_compute_is_refused_naming_dag_and_task(rule, shown):
    """Airflow's SDK accepts any rule when the DAG is defined; the spec refuses it."""
    with DAG("bad", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        EmptyOperator(task_id="t", weight_rule=rule)
    with pytest.raises(SpecError) as info:
        spec_of(dag)
    message = str(info.value)
    assert message.startswith(f"DAG 'bad': task 't': weight_rule {shown}")
    assert message.endswith("is not supported by Sluice (one of downstream, upstream, absolute)")


def test_depends_on_past_and_wait_for_downstream_are_in_the_spec():
    """The scheduler waits on the previous run from these (scheduler/past.py); the rest is alike."""
    with DAG("past", start_date=datetime(2026, 1, 1), schedule=None) as dag:
        EmptyOperator(task_id="plain")
        EmptyOperator(task_id="flagged", depends_on_past=True, wait_for_downstream=True)
    spec = spec_of(dag)
    flagged = spec.task("flagged").model_dump()
    past = {"depends_on_past": True, "wait_for_downstream": True}
    assert {k: flagged[k] for k in past} == past
    assert {**flagged, "task_id": "plain", "depends_on_past": False,
            "wait_for_downstream": False} == spec.task("plain").model_dump()
