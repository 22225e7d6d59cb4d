"""Authoring helpers as Airflow's docs use them: @task.sensor, @task.virtualenv, chain_linear, Label."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Label, PokeReturnValue, chain_linear, dag, task


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def e2e_authoring():
    @task.sensor(poke_interval=0.1, timeout=30, mode="poke")
    def ready() -> PokeReturnValue:
        return PokeReturnValue(is_done=True, xcom_value="the data is there")

    @task.virtualenv(requirements=[], system_site_packages=False)
    def isolated(ready: str) -> dict:
        """Runs in a virtualenv of its own, its argument crossing by the operator's serializer."""
        import sys

        return {"prefix_is_not_ours": sys.prefix != sys.base_prefix, "got": ready}

    a, b, c, d, e = (EmptyOperator(task_id=x) for x in "abcde")
    seen = ready()
    chain_linear(a, [b, c], [d, e])  # every task of a list downstream of every one before
    seen >> Label("when ready") >> a
    isolated(seen)


e2e_authoring()
