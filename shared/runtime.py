"""Which task runtime the daemons use: Airflow's Task SDK, or Sluice's legacy SDK.

One rule, read by the scheduler (how DAG files are parsed) and the worker (how
tries run): the Task SDK runtime when Airflow's ``airflow.sdk`` is installed,
unless ``SLUICE_RUNTIME`` says ``airflow`` or ``legacy``. Deciding imports
nothing: Airflow reads its configuration (``AIRFLOW_HOME``) when first imported,
which :func:`use_airflow_home` must precede.
"""

from __future__ import annotations

import importlib.machinery
from functools import cache
from pathlib import Path

from shared.config import Settings


class RuntimeUnavailable(RuntimeError):
    """``SLUICE_RUNTIME=airflow`` but Airflow's Task SDK is not installed."""


@cache
def airflow_installed() -> bool:
    """Whether the real ``airflow.sdk`` is on ``sys.path`` (never the legacy import shim)."""
    spec = importlib.machinery.PathFinder.find_spec("airflow")
    if spec is None or not spec.submodule_search_locations:
        return False
    return any((Path(p) / "sdk" / "__init__.py").is_file()
               for p in spec.submodule_search_locations)


def airflow_runtime(settings: Settings | None = None) -> bool:
    """True when tries run and files parse with Airflow's Task SDK."""
    choice = (settings or Settings()).runtime
    if choice == "legacy":
        return False
    if choice == "airflow":
        if not airflow_installed():
            raise RuntimeUnavailable("SLUICE_RUNTIME=airflow but Airflow's Task SDK is not "
                                     "installed (pip install 'sluice[airflow]')")
        return True
    return airflow_installed()


def use_airflow_home(settings: Settings) -> Path:
    """Point ``AIRFLOW_HOME`` at ``$SLUICE_HOME/airflow`` (one already set is kept);
    call before anything imports Airflow."""
    from shared.airflow_spec.loading import use_airflow_home as use

    return use(settings.home)
