"""DAG files parsed by Airflow's own Task SDK, walked into Sluice's ``DagSpec``.

Loading uses Airflow's ``DagBag`` (its import errors, duplicate-id, cycle and
``dagbag_import_timeout`` behaviour) with no Airflow database and
``AIRFLOW_HOME`` under Sluice's home; walking turns each ``airflow.sdk`` DAG
into the JSON the scheduler decides from (``shared.serialization.DagSpec``).
Airflow is imported only when a function here runs, so the scheduler may
import this package (for ``airflow_home``) and stay free of Airflow.
"""

from shared.airflow_spec.errors import SpecError
from shared.airflow_spec.loading import FileResult, airflow_home, load
from shared.airflow_spec.parse import parse
from shared.airflow_spec.walk import dag_spec, validated_spec

__all__ = ["FileResult", "SpecError", "airflow_home", "dag_spec", "load", "parse", "validated_spec"]
