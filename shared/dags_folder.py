"""The DAGs folder: which of its files are DAG files, and its place on ``sys.path``.

The scheduler lists the files it parses here; Airflow's DagBag (in the parse
server) imports them. The folder is put on ``sys.path``, as in Airflow, so
that modules beside the DAG files, and trigger classes defined in them, import
by name in the triggerer too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import structlog

log = structlog.get_logger()


def add_dags_folder_to_path(dags_folder: Path) -> None:
    folder = str(Path(dags_folder).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)


class DagsFolderMissing(FileNotFoundError):
    """The DAGs folder is not there: a configuration error, not a folder without DAGs."""

    def __init__(self, folder: Path) -> None:
        super().__init__(f"DAGs folder {folder} does not exist or is not a directory")


def require_dags_folder(dags_folder: Path) -> None:
    """Exit with code 2 and one error line when the DAGs folder is not there.

    Called at the start of the scheduler and of standalone: started on a typo,
    the scheduler would otherwise take every DAG for deleted.
    """
    if not Path(dags_folder).is_dir():
        log.error("dags_folder_missing", dags_folder=str(dags_folder),
                  error=str(DagsFolderMissing(dags_folder)))
        raise SystemExit(2)


def list_dag_files(dags_folder: Path) -> list[Path]:
    """Python files that look like DAG files (mention ``dag``/``DAG``), as Airflow's safe mode.

    Raises :class:`DagsFolderMissing` when the folder is not there, so that a
    folder that vanished is never read as "every DAG file was deleted".
    """
    folder = Path(dags_folder)
    if not folder.is_dir():
        raise DagsFolderMissing(folder)
    out = []
    for path in sorted(folder.rglob("*.py")):
        if any(part.startswith((".", "__")) for part in path.relative_to(folder).parts):
            continue
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if "dag" in text.lower():
            out.append(path)
    return out
