"""Loading DAG files: import a file, collect the DAGs it builds.

The DAGs folder is put on ``sys.path`` (as in Airflow) so that modules beside
the DAG files, and trigger classes defined in them, import by name. Loading
runs user code: the scheduler does it in a child process with a timeout; the
worker's task runner does it in its own process and caches by mtime.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from shared.sdk.dag import DAG, AirflowDagCycleException, collect_loaded


@dataclass
class FileResult:
    fileloc: str
    dags: list[DAG] = field(default_factory=list)
    error: str | None = None


def add_dags_folder_to_path(dags_folder: Path) -> None:
    folder = str(Path(dags_folder).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)


def module_name_for(path: Path, dags_folder: Path) -> str:
    try:
        rel = path.resolve().relative_to(Path(dags_folder).resolve())
    except ValueError:
        rel = Path(path.name)
    return ".".join(rel.with_suffix("").parts)


def list_dag_files(dags_folder: Path) -> list[Path]:
    """Python files that look like DAG files (mention ``dag``/``DAG``), as Airflow's safe mode."""
    folder = Path(dags_folder)
    if not folder.is_dir():
        return []
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


def load_file(path: Path, dags_folder: Path) -> FileResult:
    """Import one DAG file fresh; a failure becomes ``FileResult.error``, never an exception."""
    from shared import compat

    compat.install_if_enabled()
    add_dags_folder_to_path(dags_folder)
    name = module_name_for(path, dags_folder)
    result = FileResult(fileloc=str(path.resolve()))
    collect_loaded()
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - a broken DAG file must not escape
        sys.modules.pop(name, None)
        collect_loaded()
        if isinstance(exc, KeyboardInterrupt):
            raise
        result.error = _format_error(exc, path)
        return result
    seen: dict[str, DAG] = {}
    for dag in collect_loaded() + [v for v in vars(module).values() if isinstance(v, DAG)]:
        if dag.dag_id in seen and seen[dag.dag_id] is not dag:
            result.error = f"{path}: DAG id {dag.dag_id!r} is defined more than once"
            return result
        seen[dag.dag_id] = dag
    for dag in seen.values():
        dag.fileloc = result.fileloc
    result.error = _check_dags(list(seen.values()), path)
    result.dags = [] if result.error else list(seen.values())
    return result


def _check_dags(dags: list[DAG], path: Path) -> str | None:
    """What Airflow's DagBag checks once a file has run: no DAG's tasks form a cycle.

    The first failing DAG's error is the file's import error (its other DAGs
    are not loaded), so a cyclic DAG is refused at load instead of deadlocking
    its runs.
    """
    for dag in dags:
        try:
            dag.check_cycle()
        except AirflowDagCycleException as exc:
            return f"{path}: {_describe(exc, qualified=False)}"
    return None


def _format_error(exc: BaseException, path: Path) -> str:
    """``<file>:<line>: <Type>: <message> (<notes>)``: the import error of a DAG file.

    The line is the file's last frame in the traceback. The message is the
    exception's own text, kept exact; its notes (``exc.add_note``, e.g. the
    task and DAG of a mapping mistake) follow on the same line, in parentheses.
    """
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    where = f"{path}:{frames[-1].lineno}" if frames else str(path)
    return f"{where}: {_describe(exc)}"


def _describe(exc: BaseException, qualified: bool = True) -> str:
    """``<Type>: <message>``, then the notes joined by ``; `` in parentheses.

    ``traceback.format_exception_only`` would put each note on a line of its
    own; an import error is shown as one line (``sluice dags list``, logs).
    ``qualified=False`` names the type without its module, as Airflow's DagBag
    does for the checks it makes after a file ran (``AirflowDagCycleException``).
    """
    if qualified:
        shown = traceback.TracebackException(type(exc), exc, None, compact=True)
        shown.__notes__ = None
        detail = "".join(shown.format_exception_only()).strip()
    else:
        detail = f"{type(exc).__name__}: {exc}"
    notes = [str(n) for n in getattr(exc, "__notes__", None) or ()]
    return f"{detail} ({'; '.join(notes)})" if notes else detail


class DagCache:
    """DAGs by id, reloaded when their file changes (used by the task runner)."""

    def __init__(self, dags_folder: Path):
        self.dags_folder = Path(dags_folder)
        self._files: dict[str, tuple[float, FileResult]] = {}

    def get(self, fileloc: str, dag_id: str) -> DAG:
        path = Path(fileloc)
        mtime = path.stat().st_mtime
        cached = self._files.get(fileloc)
        if cached is None or cached[0] != mtime:
            cached = (mtime, load_file(path, self.dags_folder))
            self._files[fileloc] = cached
        result = cached[1]
        if result.error:
            raise ImportError(f"DAG file failed to load: {result.error}")
        for dag in result.dags:
            if dag.dag_id == dag_id:
                return dag
        raise LookupError(f"DAG {dag_id!r} not found in {fileloc}")
