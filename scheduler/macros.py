"""``{{ macros.* }}`` in the trigger kwargs the scheduler renders.

The scheduler does not import Airflow; these are the names of Airflow's
``airflow.sdk.execution_time.macros`` that need no Airflow (``ds_add``,
``ds_format``, ``datetime``, ``timedelta``, ``json``, ``time``, ``uuid``,
``random``, ``dateutil``), with its signatures.
"""

from __future__ import annotations

import json  # noqa: F401 - offered to templates as macros.json
import time  # noqa: F401 - macros.time
import uuid  # noqa: F401 - macros.uuid
from datetime import datetime, timedelta  # noqa: F401 - macros.datetime, macros.timedelta
from random import random  # noqa: F401 - macros.random(), as Airflow's

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
