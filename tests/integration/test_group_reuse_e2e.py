"""Reused task groups and XComArgs in strings, through the three real daemons."""

from __future__ import annotations

import pytest

from tests.cluster import Cluster

pytestmark = pytest.mark.timeout(240)


def results(doc: dict) -> dict[tuple[str, int], tuple[str, object]]:
    """(state, return_value) of every instance, by (task_id, map_index)."""
    return {(t["task_id"], t["map_index"]): (t["state"], t["return_value"]) for t in doc["tasks"]}


async def test_reused_groups_run_apart_and_a_string_reference_renders_the_value(cluster: Cluster):
    cluster.write_dag("reuse.py", """
        from datetime import datetime
        from airflow.providers.standard.operators.bash import BashOperator
        from airflow.providers.standard.operators.empty import EmptyOperator
        from airflow.sdk import XComArg, dag, task, task_group

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def reuse():
            @task
            def push():
                return "hello"

            @task
            def work(x):
                return x * 10

            @task_group
            def process(x):
                return EmptyOperator(task_id="start") >> work(x)

            @task_group
            def each(x):
                work(x)

            pushed = push()
            echo = BashOperator(task_id="echo", bash_command=f"echo got {pushed}")
            again = BashOperator(task_id="again", bash_command=f"echo {XComArg(echo)}!")
            pushed >> echo >> again
            process(1) >> process(2)
            each.expand(x=[1, 2])
            each.expand(x=[3])

        reuse()
    """)
    cluster.start_all()
    await cluster.wait_dag("reuse", timeout=90)  # the daemons import Airflow first
    doc = await cluster.wait_run(await cluster.trigger("reuse"), 120)
    assert doc["state"] == "success"
    got = results(doc)
    assert got[("echo", -1)] == ("success", "got hello")
    assert got[("again", -1)] == ("success", "got hello!")
    assert got[("process.start", -1)][0] == got[("process__1.start", -1)][0] == "success"
    assert got[("process.work", -1)] == ("success", 10)
    assert got[("process__1.work", -1)] == ("success", 20)
    assert got[("each.work", 0)] == ("success", 10) and got[("each.work", 1)] == ("success", 20)
    assert got[("each__1.work", 0)] == ("success", 30)
