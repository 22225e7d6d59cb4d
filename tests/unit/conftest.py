"""What the mapping unit modules share: a DAG to build tasks in, fixed upstream values,
and the two small tasks most of them map with."""

from __future__ import annotations

from datetime import datetime

import pytest

from shared.sdk import DAG, task


class Values:
    """A resolver returning fixed upstream values (what a worker pulls from XCom)."""

    def __init__(self, **values):
        self.values = values

    def pull(self, task_id, key):
        return self.values[task_id]


@pytest.fixture
def in_dag():
    with DAG("d", start_date=datetime(2026, 1, 1)) as d:
        yield d


@task
def show(a, b=None):
    return (a, b)


@task
def gen():
    return [1, 2]
