"""Loading DAG files with Airflow's own ``DagBag``, as Airflow 3.3's DAG processor does.

Airflow decides what a broken file's import error says (a syntax error, a
cycle, a dag_id defined in two files, ``dagbag_import_timeout``); nothing here
rewrites it. No Airflow database is touched: a ``BundleDagBag`` only imports
files and checks the DAGs they build.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TIMEOUT_VAR = "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT"


@dataclass
class FileResult:
    """One DAG file: the ``airflow.sdk`` DAGs it built and Airflow's import error, if any.

    As in Airflow, a file may have both: a DAG refused after the file ran
    (a cycle, a duplicate dag_id) does not take the file's other DAGs with it.
    """

    fileloc: str
    dags: list[Any] = field(default_factory=list)
    error: str | None = None


def airflow_home(sluice_home: Path | None = None) -> Path:
    """Where Airflow keeps its files for Sluice: ``$SLUICE_HOME/airflow``, never ``~/airflow``."""
    from shared.config import default_home

    return Path(sluice_home or default_home()) / "airflow"


#: The executors a task may name (Airflow's ``[core] executor``, which its DagBag checks each
#: task's ``executor`` against): Sluice's worker slots, and its Kubernetes execution mode
#: (``shared.airflow_spec.executors`` routes the latter's tasks to the ``kubernetes`` queue).
EXECUTORS_VAR = "AIRFLOW__CORE__EXECUTOR"
SLUICE_EXECUTORS = "LocalExecutor,KubernetesExecutor"


def use_airflow_home(sluice_home: Path | None = None) -> Path:
    """Point ``AIRFLOW_HOME`` under Sluice's home before Airflow reads its configuration,
    and name the executors Sluice provides (unless ``AIRFLOW__CORE__EXECUTOR`` is set).

    An ``AIRFLOW_HOME`` already set is kept. Airflow imported without one
    would have chosen ``~/airflow``: that is refused rather than written to.
    """
    os.environ.setdefault(EXECUTORS_VAR, SLUICE_EXECUTORS)
    current = os.environ.get("AIRFLOW_HOME")
    if current:
        return Path(current)
    if "airflow" in sys.modules:
        raise RuntimeError("airflow was imported before AIRFLOW_HOME was set; "
                           "it would use ~/airflow instead of Sluice's home")
    home = airflow_home(sluice_home)
    home.mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    return home


@contextmanager
def import_timeout(timeout_s: float | None) -> Iterator[None]:
    """Airflow's ``[core] dagbag_import_timeout`` set to ``timeout_s`` for one load.

    Airflow reads the option from the environment each time it imports a
    file, so its own ``SIGALRM`` timer and message apply.
    """
    if timeout_s is None:
        yield
        return
    previous = os.environ.get(TIMEOUT_VAR)
    os.environ[TIMEOUT_VAR] = str(float(timeout_s))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(TIMEOUT_VAR, None)
        else:
            os.environ[TIMEOUT_VAR] = previous


def load(path: Path, dags_folder: Path, timeout_s: float | None = None,
         sluice_home: Path | None = None) -> dict[str, FileResult]:
    """Import a DAG file, or every DAG file of a folder, with Airflow's ``BundleDagBag``.

    ``path`` must be inside ``dags_folder`` (Airflow's bundle: it is put on
    ``sys.path`` so modules beside the DAG files import by name). Returns one
    result per file Airflow looked at, keyed by absolute path. Runs user
    code: call it in a child process, in its main thread (the timeout is a
    ``SIGALRM``).
    """
    use_airflow_home(sluice_home)
    from airflow.dag_processing.dagbag import BundleDagBag

    folder = Path(dags_folder).resolve()
    with import_timeout(timeout_s):
        bag = BundleDagBag(dag_folder=str(Path(path).resolve()), bundle_path=folder,
                           load_op_links=False)
    results = {str(f): FileResult(str(f)) for f in bag.file_last_changed}
    for dag in bag.dags.values():
        results.setdefault(dag.fileloc, FileResult(dag.fileloc)).dags.append(dag)
    for relative, message in bag.import_errors.items():
        fileloc = str(folder / relative)
        results.setdefault(fileloc, FileResult(fileloc)).error = message
    return results
