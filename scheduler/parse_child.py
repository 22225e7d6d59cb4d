"""Child process that imports one DAG file and prints its serialized DAGs as JSON.

``python -m scheduler.parse_child FILE DAGS_FOLDER [TIMEOUT_S]``. User code's own
prints go to stderr; stdout carries exactly one JSON document. An import that
runs past ``TIMEOUT_S`` becomes the file's import error (Airflow's
``dagbag_import_timeout``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path


def main() -> None:
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    path, dags_folder = Path(sys.argv[1]), Path(sys.argv[2])
    timeout_s = float(sys.argv[3]) if len(sys.argv) > 3 else None
    from shared.dagbag import load_file
    from shared.serialization import serialize_dag

    result = load_file(path, dags_folder, timeout_s)
    dags, error = [], result.error
    if error is None:
        try:
            dags = [serialize_dag(d) for d in result.dags]
        except Exception as exc:  # noqa: BLE001 - reported as the file's import error
            error = f"{path}: cannot serialize DAG: {type(exc).__name__}: {exc}"
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""
    json.dump({"fileloc": result.fileloc, "source_hash": digest, "dags": dags, "error": error}, out)
    out.flush()


if __name__ == "__main__":
    main()
