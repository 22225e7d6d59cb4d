"""Dynamic task mapping: over literals, over upstream output, expand_kwargs, a mapped group."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task, task_group


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def e2e_mapping():
    @task
    def double(x: int) -> int:
        return 2 * x

    @task
    def numbers() -> list[int]:
        return [1, 2, 3, 4]

    @task
    def add(x: int, y: int) -> int:
        return x + y

    @task
    def total(values) -> int:
        return sum(values)

    @task
    def describe(name: str, size: int) -> str:
        return f"{name}:{size}"

    @task_group
    def grow(value: int):
        @task
        def inc(v: int) -> int:
            return v + 1

        @task
        def square(v: int) -> int:
            return v * v

        return square(inc(value))

    @task
    def collect(values) -> list[int]:
        return sorted(values)

    total.override(task_id="total_literal")(double.expand(x=[1, 2, 3]))
    total.override(task_id="total_upstream")(add.partial(y=10).expand(x=numbers()))
    describe.expand_kwargs([{"name": "a", "size": 1}, {"name": "b", "size": 2}])
    collect(grow.expand(value=[1, 2, 3]))


e2e_mapping()
