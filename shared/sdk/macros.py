"""``{{ macros.* }}`` in templates: the date helpers and modules Airflow's macros offer.

Airflow DAGs use ``macros.ds_add(ds, 7)``, ``macros.ds_format(...)`` and
``macros.datetime`` / ``macros.timedelta`` in their templates; the same names
are here, with Airflow's signatures, so those templates render unchanged.
"""

from __future__ import annotations

import json  # noqa: F401 - offered to templates as macros.json
import random  # noqa: F401 - macros.random
import time  # noqa: F401 - macros.time
import uuid  # noqa: F401 - macros.uuid
from datetime import datetime, timedelta  # noqa: F401 - macros.datetime, macros.timedelta

import dateutil  # noqa: F401 - macros.dateutil
import dateutil.relativedelta  # noqa: F401


def ds_add(ds: str, days: int) -> str:
    """``ds`` (``YYYY-MM-DD``) moved by ``days``: ``ds_add("2015-01-01", 5)`` is ``"2015-01-06"``."""
    if not days:
        return str(ds)
    return (datetime.strptime(str(ds), "%Y-%m-%d") + timedelta(days=days)).strftime("%Y-%m-%d")


def ds_format(ds: str, input_format: str, output_format: str) -> str:
    """``ds`` parsed with ``input_format`` and written with ``output_format``."""
    return datetime.strptime(str(ds), input_format).strftime(output_format)
