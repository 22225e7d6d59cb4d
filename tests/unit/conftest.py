"""What unit modules share: a DAG to build tasks in, fixed upstream values, the two
small tasks most mapping modules map with, a DAG's spec as the scheduler gets it,
and DAG files written to a folder and loaded as modules, undone after each test.

DAGs are built with Airflow's own Task SDK (``airflow.sdk``), as users write them;
``spec_of`` walks one into the ``DagSpec`` the scheduler decides from, exactly as
the parse server does.
"""

from __future__ import annotations

import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest
from airflow.sdk import DAG, task

from shared.airflow_spec import validated_spec
from shared.serialization import DagSpec

_written_modules: list[str] = []


def write_dag_file(folder: Path, name: str, source: str) -> Path:
    """``folder/name.py`` holding ``source`` (dedented); its module is forgotten after the test."""
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    _written_modules.append(name)
    return path


def spec_of(dag) -> DagSpec:
    """The ``DagSpec`` of an ``airflow.sdk`` DAG, as the scheduler's parse server builds it."""
    return validated_spec(dag)


@pytest.fixture
def isolated_dag_modules():
    """Undo what loading DAG files does: sys.path and the modules they loaded."""
    path = list(sys.path)
    yield
    sys.path[:] = path
    while _written_modules:
        sys.modules.pop(_written_modules.pop(), None)


class Values:
    """A resolver returning fixed upstream values (what a worker pulls from XCom)."""

    def __init__(self, **values):
        self.values = values

    def pull(self, task_id, key):
        return self.values[task_id]


@pytest.fixture
def in_dag():
    with DAG("d", start_date=datetime(2026, 1, 1), schedule=None) as d:
        yield d


@task
def show(a, b=None):
    return (a, b)


@task
def gen():
    return [1, 2]
