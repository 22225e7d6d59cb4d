"""What unit modules share: a DAG to build tasks in, fixed upstream values, the two
small tasks most mapping modules map with, and DAG files written to a folder and
loaded as modules, undone after each test."""

from __future__ import annotations

import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from shared import compat
from shared.sdk import DAG, task

_written_modules: list[str] = []


def write_dag_file(folder: Path, name: str, source: str) -> Path:
    """``folder/name.py`` holding ``source`` (dedented); its module is forgotten after the test."""
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    _written_modules.append(name)
    return path


@pytest.fixture
def isolated_dag_modules():
    """Undo what loading DAG files does: the airflow mapping, sys.path, loaded modules."""
    path = list(sys.path)
    compat.uninstall()
    yield
    compat.uninstall()
    sys.path[:] = path
    for name in [n for n in sys.modules if n == "airflow" or n.startswith("airflow.")]:
        del sys.modules[name]
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
    with DAG("d", start_date=datetime(2026, 1, 1)) as d:
        yield d


@task
def show(a, b=None):
    return (a, b)


@task
def gen():
    return [1, 2]
