"""The sandboxed Jinja environment the scheduler renders ``start_from_trigger`` kwargs in.

The scheduler runs no user code: a template reaching for Python internals
(``''.__class__.__mro__``) or for a module through another
(``macros.uuid.os``) raises ``SecurityError``, and the instance fails with it,
instead of running arbitrary code in the scheduler.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import jinja2
import jinja2.sandbox

from scheduler import macros


def _ts_nodash_with_tz(d: Any) -> str:
    return d.isoformat().replace("-", "").replace(":", "")


#: Airflow's date filters: ``{{ logical_date | ds_nodash }}``
FILTERS = {
    "ds": lambda d: d.strftime("%Y-%m-%d"),
    "ds_nodash": lambda d: d.strftime("%Y%m%d"),
    "ts": lambda d: d.isoformat(),
    "ts_nodash": lambda d: d.strftime("%Y%m%dT%H%M%S"),
    "ts_nodash_with_tz": _ts_nodash_with_tz,
}


class SandboxedEnvironment(jinja2.sandbox.SandboxedEnvironment):
    """Jinja's sandbox, closed on modules too: ``macros.uuid`` is offered to templates, but
    the modules it imports (``macros.uuid.os``) are not, only a module's own submodules
    (``macros.dateutil.relativedelta``). ``_private`` attributes stay refused."""

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if not isinstance(value, ModuleType) or obj is macros:
            return True
        return isinstance(obj, ModuleType) and value.__name__.startswith(obj.__name__ + ".")


def environment() -> jinja2.Environment:
    """A new sandboxed environment with Airflow's filters; undefined names are errors."""
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, cache_size=400)
    env.filters.update(FILTERS)
    return env
