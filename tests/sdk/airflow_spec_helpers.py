"""The Airflow 3 DAG files of ``tests/sdk/dags`` and the DagSpec stored for each.

``specs/<file>.json`` holds, by dag_id, the spec the scheduler decides from
(``fileloc`` left out: it is where the file was parsed). Write them again with
``python -m tests.sdk.airflow_spec_helpers`` after a deliberate change to the
walk, and read the diff: every line of it changes what the scheduler does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

DAGS = Path(__file__).resolve().parent / "dags"
SPECS = DAGS / "specs"


def dag_files() -> dict[str, Path]:
    """Every DAG file of ``tests/sdk/dags`` by name (its stem)."""
    return {p.stem: p for p in sorted(DAGS.glob("*.py"))}


def parse_copy(folder: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Copy the DAG files into ``folder`` and parse them there as the parse server does:
    by file name, each DAG's validated spec by dag_id (``fileloc`` kept)."""
    from shared.airflow_spec import parse
    from shared.serialization import DagSpec

    folder.mkdir(parents=True, exist_ok=True)
    for path in dag_files().values():
        shutil.copy(path, folder / path.name)
    out = {}
    for result in parse(folder, folder):
        assert result["error"] is None, result["error"]
        out[Path(result["fileloc"]).stem] = {
            d["dag_id"]: DagSpec.model_validate(d).model_dump(mode="json") for d in result["dags"]}
    return out


def without_fileloc(specs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {dag_id: {k: v for k, v in spec.items() if k != "fileloc"}
            for dag_id, spec in specs.items()}


def expected(name: str) -> dict[str, dict[str, Any]]:
    return json.loads((SPECS / f"{name}.json").read_text())


def dumps(specs: dict[str, dict[str, Any]]) -> str:
    """JSON with one line per DAG field and per task (tasks in the DAG's order): a change
    to the walk shows as the lines of the tasks it changes."""
    dags = []
    for dag_id in sorted(specs):
        spec = specs[dag_id]
        fields = [f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}"
                  for k, v in sorted(spec.items()) if k != "tasks"]
        tasks = ",\n".join(f"   {json.dumps(t, sort_keys=True)}" for t in spec["tasks"])
        fields.append(f'  "tasks": [\n{tasks}\n  ]')
        dags.append(f" {json.dumps(dag_id)}: {{\n" + ",\n".join(fields) + "\n }")
    return "{\n" + ",\n".join(dags) + "\n}\n"


def write_expected(folder: Path) -> None:
    SPECS.mkdir(exist_ok=True)
    for name, specs in parse_copy(folder).items():
        (SPECS / f"{name}.json").write_text(dumps(without_fileloc(specs)))


if __name__ == "__main__":
    import tempfile

    from shared.airflow_spec.loading import use_airflow_home

    with tempfile.TemporaryDirectory() as tmp:
        use_airflow_home(Path(tmp))
        write_expected(Path(tmp) / "dags")
