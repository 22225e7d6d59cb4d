"""Loading DAG files: import a file, collect the DAGs it builds.

The DAGs folder is put on ``sys.path`` (as in Airflow) so that modules beside
the DAG files, and trigger classes defined in them, import by name. Loading
runs user code: the scheduler does it in a child process with a timeout; the
worker's task runner does it in its own process and caches by mtime.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from shared.sdk.dag import DAG, AirflowDagCycleException, collect_loaded
from shared.sdk.exceptions import AirflowTaskTimeout

log = structlog.get_logger()


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


def load_file(path: Path, dags_folder: Path, timeout_s: float | None = None) -> FileResult:
    """Import one DAG file fresh; a failure becomes ``FileResult.error``, never an exception.

    With ``timeout_s`` (the scheduler's parsing child; main thread only), an
    import that runs longer fails with Airflow's ``dagbag_import_timeout`` error.
    """
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
        with import_timeout(path, timeout_s):
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


def import_timeout_message(path: Path, timeout_s: float) -> str:
    """Airflow's text for a DAG file whose import outlived ``dagbag_import_timeout``."""
    return f"DagBag import timeout for {path} after {float(timeout_s)}s."


def import_timeout_error(path: Path, timeout_s: float) -> str:
    """The import error of a file whose parsing process had to be killed (no line known)."""
    return f"{path}: {_describe(AirflowTaskTimeout(import_timeout_message(path, timeout_s)))}"


@contextmanager
def import_timeout(path: Path, timeout_s: float | None) -> Iterator[None]:
    """Raise ``AirflowTaskTimeout`` inside the file's code once ``timeout_s`` has passed.

    A ``SIGALRM``, as Airflow's DagBag does: the exception unwinds through the
    user's frames, so the import error names the line the file hung on.
    """
    if not timeout_s or timeout_s <= 0:
        yield
        return

    def expire(_signum, _frame):
        raise AirflowTaskTimeout(import_timeout_message(path, timeout_s))

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
