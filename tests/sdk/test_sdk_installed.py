"""Sluice's environment: Airflow's packages are the pinned ones."""

from importlib.metadata import version


def test_task_sdk_and_core_are_the_pinned_airflow_3_3_line():
    assert version("apache-airflow-task-sdk") == "1.3.2"
    assert version("apache-airflow-core").startswith("3.3.")
    from airflow.sdk import DAG, task  # noqa: F401 - importable without any Airflow database
