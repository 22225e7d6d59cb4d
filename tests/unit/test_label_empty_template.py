"""``map_index_template=""`` labels each instance ``""`` (Airflow stores ``""``), not null."""

from __future__ import annotations

from tests.unit.test_mapping_templates import run_instance

EMPTY_DAG = '''
from datetime import datetime
from shared.sdk import PythonOperator, dag, task

@task(map_index_template="")
def body(x):
    if x == "boom":
        raise RuntimeError("boom")
    return x

def echo(x):
    return x

@dag(dag_id="flow", start_date=datetime(2026, 1, 1))
def flow():
    body.expand(x=["ok", "boom"])
    PythonOperator.partial(task_id="classic", python_callable=echo,
                           map_index_template="").expand(op_args=[["a"]])

flow()
'''


def test_an_empty_template_gives_an_empty_label_after_success_and_failure(tmp_path):
    results = [run_instance(tmp_path, EMPTY_DAG, task_id, i)
               for task_id, i in (("body", 0), ("body", 1), ("classic", 0))]
    assert [(r["outcome"], r["label"]) for r in results] == [
        ("success", ""), ("retry", ""), ("success", "")]
