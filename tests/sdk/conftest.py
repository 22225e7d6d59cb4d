"""Task SDK tests: Airflow's home is a private temporary folder, never ``~/airflow``.

Set at import, before anything imports ``airflow`` (its configuration is read then).
"""

import os
import tempfile

os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="sluice-airflow-home-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
