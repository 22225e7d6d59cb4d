"""Airflow import compatibility: DAG files written for Airflow 2 or 3 load unchanged.

Contract
--------
``install_if_enabled()`` (called by the DAG loader before every DAG file import,
so in the scheduler, worker and triggerer alike) puts a finder on
``sys.meta_path`` that makes the ``airflow.*`` modules listed in :data:`MODULES`
resolve to Sluice's SDK. It does so once, and only if ``SLUICE_AIRFLOW_COMPAT``
is not false-like and the real Airflow is not importable (a real Airflow
always wins). ``uninstall()`` undoes it (tests).

* Each listed module is a *proxy*: a name is looked up, when asked for, in the
  module's Sluice sources, in order. Nothing is copied, so names the SDK gains
  later (sensors, mapping, triggers) are found without touching this file, and
  a source module that does not exist yet only matters when a name is asked for.
* Unsupported is loud, never a stand-in that does nothing:
  ``from airflow.operators.python import Foo`` raises
  ``ImportError: cannot import name 'Foo' from 'airflow.operators.python': not supported by Sluice``
  and ``import airflow.providers.amazon`` raises
  ``ModuleNotFoundError: No module named 'airflow.providers.amazon' (not supported by Sluice)``.
  The name error is an ``ImportError`` raised by the module's ``__getattr__``
  (also for plain attribute access): CPython turns an ``AttributeError`` there
  into a generic "cannot import name ... (unknown location)" and drops our text.
* Trigger class paths such as
  ``airflow.providers.standard.triggers.temporal.TimeDeltaTrigger`` resolve
  through ``importlib.import_module`` like any other import.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType, SimpleNamespace
from typing import Any

_NOT_SUPPORTED = "not supported by Sluice"
_FALSE = {"0", "false", "no", "off"}

_SDK = "shared.sdk"
_OPERATORS = ["shared.sdk.operators"]
_PYTHON = ["shared.sdk.operators", "shared.sdk.decorators"]
_SENSORS = ["shared.sdk.sensors"]
_TRIGGERS = ["shared.sdk.triggers"]
_EXCEPTIONS = ["shared.sdk.exceptions"]

#: Airflow module -> Sluice sources its names are looked up in ("module" or
#: "module:attribute"). Parents of these names are packages, with no names of
#: their own unless listed here too. Any other ``airflow.*`` module is unsupported.
MODULES: dict[str, list[str]] = {
    "airflow": [_SDK],
    # Airflow 3 authoring API
    "airflow.sdk": [_SDK, "shared.sdk.sensors"],
    "airflow.sdk.exceptions": _EXCEPTIONS,
    "airflow.sdk.timezone": ["shared.compat:_TIMEZONE"],
    "airflow.sdk.bases.operator": ["shared.sdk.baseoperator"],
    "airflow.sdk.bases.sensor": _SENSORS,
    "airflow.sdk.definitions.baseoperator": ["shared.sdk.baseoperator"],
    "airflow.sdk.definitions.context": ["shared.sdk.decorators"],
    "airflow.sdk.definitions.dag": ["shared.sdk.dag"],
    "airflow.sdk.definitions.decorators": ["shared.sdk.decorators", "shared.sdk.dag",
                                           "shared.sdk.task_group"],
    "airflow.sdk.definitions.decorators.task_group": ["shared.sdk.task_group"],
    "airflow.sdk.definitions.mappedoperator": ["shared.sdk.mapped"],
    "airflow.sdk.definitions.taskgroup": ["shared.sdk.task_group"],
    "airflow.sdk.definitions.xcom_arg": ["shared.sdk.xcom_arg"],
    # Airflow 2 authoring API
    "airflow.decorators": ["shared.sdk.decorators", "shared.sdk.dag", "shared.sdk.task_group"],
    "airflow.models": ["shared.sdk.dag", "shared.sdk.baseoperator"],
    "airflow.models.baseoperator": ["shared.sdk.baseoperator"],
    "airflow.models.dag": ["shared.sdk.dag"],
    "airflow.models.mappedoperator": ["shared.sdk.mapped"],
    "airflow.models.xcom_arg": ["shared.sdk.xcom_arg"],
    "airflow.exceptions": _EXCEPTIONS,
    "airflow.utils.trigger_rule": ["shared.trigger_rule"],
    "airflow.utils.task_group": ["shared.sdk.task_group"],
    "airflow.utils.context": ["shared.sdk.decorators"],
    "airflow.utils.dates": ["shared.compat:_DATES"],
    "airflow.utils.timezone": ["shared.compat:_TIMEZONE"],
    # operators, sensors and triggers (Airflow 2 core, Airflow 3 standard provider)
    "airflow.operators.empty": _OPERATORS,
    "airflow.operators.bash": _OPERATORS,
    "airflow.operators.python": _PYTHON,
    "airflow.providers.standard.operators.empty": _OPERATORS,
    "airflow.providers.standard.operators.bash": _OPERATORS,
    "airflow.providers.standard.operators.python": _PYTHON,
    **{f"{root}.{leaf}": _SENSORS
       for root in ("airflow.sensors", "airflow.providers.standard.sensors")
       for leaf in ("base", "time_delta", "date_time", "filesystem", "python")},
    "airflow.triggers.base": _TRIGGERS,
    "airflow.triggers.temporal": _TRIGGERS,
    "airflow.triggers.file": _TRIGGERS,
    "airflow.providers.standard.triggers.temporal": _TRIGGERS,
    "airflow.providers.standard.triggers.file": _TRIGGERS,
}


def _is_package(name: str) -> bool:
    return any(key.startswith(name + ".") for key in MODULES)


def _is_known(name: str) -> bool:
    return name in MODULES or _is_package(name)


# --- airflow.utils.dates / airflow.utils.timezone helpers (Sluice works in UTC) ---

def _namespace(**names: Any) -> SimpleNamespace:
    return SimpleNamespace(__all__=sorted(names), **names)


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _days_ago(n: int, hour: int = 0, minute: int = 0, second: int = 0,
              microsecond: int = 0) -> _dt.datetime:
    """Midnight UTC (or the given time) ``n`` days ago, as Airflow 2's ``days_ago``."""
    today = _utcnow().replace(hour=hour, minute=minute, second=second, microsecond=microsecond)
    return today - _dt.timedelta(days=n)


def _datetime(*args: Any, **kwargs: Any) -> _dt.datetime:
    """``datetime.datetime`` defaulting to UTC, as Airflow's ``timezone.datetime``."""
    kwargs.setdefault("tzinfo", _dt.UTC)
    return _dt.datetime(*args, **kwargs)


def _is_localized(value: _dt.datetime) -> bool:
    return value.utcoffset() is not None


def _make_aware(value: _dt.datetime, timezone: _dt.tzinfo | None = None) -> _dt.datetime:
    if _is_localized(value):
        raise ValueError(f"make_aware expects a naive datetime, got {value}")
    return value.replace(tzinfo=timezone or _dt.UTC)


def _convert_to_utc(value: _dt.datetime | None) -> _dt.datetime | None:
    if value is None:
        return None
    return (value if _is_localized(value) else _make_aware(value)).astimezone(_dt.UTC)


def _parse(string: str) -> _dt.datetime:
    return _convert_to_utc(_dt.datetime.fromisoformat(string))


_DATES = _namespace(days_ago=_days_ago)
_TIMEZONE = _namespace(
    utc=_dt.UTC, utcnow=_utcnow, datetime=_datetime, parse=_parse, make_aware=_make_aware,
    convert_to_utc=_convert_to_utc, is_localized=_is_localized,
    is_naive=lambda value: not _is_localized(value),
)


# --- proxy modules and the finder ---

def _load_source(source: str) -> Any:
    """The object a source names, or None when its module does not exist (yet)."""
    module_name, _, attr = source.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            return None
        raise  # the source exists but is broken: show the real error
    return getattr(module, attr) if attr else module


def _exported(source: Any, name: str) -> bool:
    """A source exports what its ``__all__`` lists and its public Sluice objects
    (not modules, not names it imported from elsewhere such as ``Any``)."""
    if name in getattr(source, "__all__", ()):
        return True
    value = vars(source).get(name)
    return (not name.startswith("_") and value is not None
            and not isinstance(value, ModuleType)
            and (getattr(value, "__module__", None) or "").startswith("shared."))


class _AirflowProxy(ModuleType):
    """An ``airflow.*`` module whose names are looked up in its Sluice sources."""

    def __getattr__(self, name: str) -> Any:
        if name == "__all__":
            return sorted({n for src in self._sources() for n in vars(src) if _exported(src, n)})
        if name.startswith("_"):  # dunders and privates: normal semantics for the import system
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        if _is_known(f"{self.__name__}.{name}"):
            return importlib.import_module(f"{self.__name__}.{name}")
        for source in self._sources():
            if _exported(source, name):
                return getattr(source, name)
        raise ImportError(f"cannot import name {name!r} from {self.__name__!r}: {_NOT_SUPPORTED}",
                          name=self.__name__)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.__getattr__("__all__")))

    def __repr__(self) -> str:
        return f"<module {self.__name__!r} (Sluice: {', '.join(MODULES.get(self.__name__, []))})>"

    def _sources(self) -> list[Any]:
        loaded = (_load_source(s) for s in MODULES.get(self.__name__, []))
        return [src for src in loaded if src is not None]


class _AirflowFinder:
    """Meta path finder and loader for ``airflow`` and its submodules."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "airflow" and not fullname.startswith("airflow."):
            return None
        if not _is_known(fullname):
            raise ModuleNotFoundError(f"No module named {fullname!r} ({_NOT_SUPPORTED})",
                                      name=fullname)
        return importlib.machinery.ModuleSpec(fullname, self, is_package=_is_package(fullname))

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return _AirflowProxy(spec.name)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: names resolve on access."""


_FINDER = _AirflowFinder()


def install_if_enabled() -> None:
    """Install the ``airflow.*`` finder once, unless disabled or the real Airflow is present."""
    if _FINDER in sys.meta_path:
        return
    if os.environ.get("SLUICE_AIRFLOW_COMPAT", "").strip().lower() in _FALSE:
        return
    if not isinstance(sys.modules.get("airflow"), _AirflowProxy) and \
            importlib.util.find_spec("airflow") is not None:
        return
    sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    """Remove the finder and every proxy module it created (for tests)."""
    while _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
    for name, module in list(sys.modules.items()):
        if isinstance(module, _AirflowProxy):
            del sys.modules[name]
