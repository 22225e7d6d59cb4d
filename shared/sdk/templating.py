"""Jinja rendering of ``template_fields`` against the task's context.

Strings are rendered; lists, tuples, sets and dicts are rendered item by
item; ``XComArg`` values are resolved to the upstream's output (never
rendered); ``@dag`` parameters resolve to ``params[name]``.

Every task template renders in a sandbox, as in Airflow: a template reaching
for Python internals (``''.__class__.__mro__``) or for a module through another
(``macros.uuid.os``) fails its task instance with a ``SecurityError`` naming
the field, instead of running arbitrary code.
"""

from __future__ import annotations

from functools import lru_cache
from types import ModuleType
from typing import Any

import jinja2
import jinja2.nativetypes
import jinja2.sandbox

from shared.sdk import macros


class ParamRef:
    """A ``@dag`` function parameter: resolves to ``context['params'][name]``."""

    def __init__(self, name: str):
        self.name = name

    def resolve(self, context: dict) -> Any:
        return context["params"][self.name]

    def __repr__(self) -> str:
        return f"ParamRef({self.name!r})"


def _ts_nodash_with_tz(d: Any) -> str:
    return d.isoformat().replace("-", "").replace(":", "")


# Airflow's date filters: ``{{ logical_date | ds_nodash }}``
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
    (``macros.dateutil.relativedelta``). ``_private`` attributes stay refused, as Jinja
    does (Airflow allows them, which opens ``uuid._get_command_stdout``)."""

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if not isinstance(value, ModuleType) or obj is macros:
            return True
        return isinstance(obj, ModuleType) and value.__name__.startswith(obj.__name__ + ".")


class SandboxedNativeEnvironment(SandboxedEnvironment, jinja2.nativetypes.NativeEnvironment):
    """The same sandbox, rendering to Python objects (``render_template_as_native_obj``)."""


def environment(native: bool = False) -> jinja2.Environment:
    """A new sandboxed environment with Airflow's filters: every task template renders in one."""
    kind = SandboxedNativeEnvironment if native else SandboxedEnvironment
    env = kind(undefined=jinja2.StrictUndefined, cache_size=400)
    env.filters.update(FILTERS)
    return env


@lru_cache(maxsize=64)
def _environment(native: bool, user_filters: tuple = ()) -> jinja2.Environment:
    """One environment per (native, DAG's ``user_defined_filters``), its templates cached."""
    env = environment(native)
    env.filters.update(dict(user_filters))
    return env


@lru_cache(maxsize=1024)
def _compiled(source: str, native: bool, user_filters: tuple = ()) -> jinja2.Template:
    return _environment(native, user_filters).from_string(source)


def render_string(template: str, context: dict, *, native: bool = False,
                  filters: dict | None = None) -> Any:
    """Render one string; ``filters`` are the DAG's ``user_defined_filters``.

    A native template that is one undefined (or refused) value raises its error here:
    Jinja's native rendering would hand back the ``Undefined`` object itself.
    """
    if "{{" not in template and "{%" not in template:
        return template
    key = tuple(sorted(filters.items())) if filters else ()
    out = _compiled(template, native, key).render(**context)
    if isinstance(out, jinja2.Undefined):
        out._fail_with_undefined_error()
    return out


def render_field(task: Any, field: str, value: Any, context: dict) -> Any:
    """:func:`render_template` of one templated argument; a sandbox refusal names it."""
    try:
        return render_template(value, context, task)
    except jinja2.sandbox.SecurityError as exc:
        raise jinja2.sandbox.SecurityError(
            f"template of {field!r} refused by the sandbox: {exc}") from exc


def render_template(value: Any, context: dict, task: Any = None) -> Any:
    from shared.sdk.xcom_arg import XComArg

    dag = task.dag if task is not None else None
    native = bool(dag is not None and dag.render_template_as_native_obj)
    if isinstance(value, str):
        return render_string(value, context, native=native,
                             filters=getattr(dag, "user_defined_filters", None))
    if isinstance(value, XComArg):
        return value.resolve(context["__resolver__"])
    if isinstance(value, ParamRef):
        return value.resolve(context)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
        return type(value)(*(render_template(v, context, task) for v in value))
    if isinstance(value, list | tuple | set | frozenset):
        return type(value)(render_template(v, context, task) for v in value)
    if isinstance(value, dict):
        return {k: render_template(v, context, task) for k, v in value.items()}
    return value
