"""One call for the parse child: DAG files in, each file's specs and import error out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.airflow_spec.errors import SpecError
from shared.airflow_spec.loading import load
from shared.airflow_spec.walk import dag_spec
from shared.serialization import DagSpec


def parse(path: Path, dags_folder: Path, timeout_s: float | None = None,
          sluice_home: Path | None = None) -> list[dict[str, Any]]:
    """``{"fileloc", "dags", "error"}`` per file: the DagSpec JSON of each DAG and the import error.

    As Airflow does with a DAG it refuses after the file ran, a DAG Sluice
    cannot schedule is left out and its reason joins the file's import
    error (one line per refused DAG); the file's other DAGs are kept.
    """
    out = []
    for fileloc, result in load(path, dags_folder, timeout_s, sluice_home).items():
        specs, errors = [], [result.error] if result.error else []
        for dag in result.dags:
            try:
                spec = dag_spec(dag)
                DagSpec.model_validate(spec)
            except SpecError as exc:
                errors.append(f"{fileloc}: {exc}")
                continue
            except (TypeError, ValueError) as exc:
                errors.append(f"{fileloc}: cannot serialize DAG {dag.dag_id!r}: "
                              f"{type(exc).__name__}: {exc}")
                continue
            specs.append(spec)
        out.append({"fileloc": fileloc, "dags": specs, "error": "\n".join(errors) or None})
    return out
