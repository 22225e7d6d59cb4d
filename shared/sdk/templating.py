"""Jinja rendering of ``template_fields`` against the task's context.

Strings are rendered; lists, tuples, sets and dicts are rendered item by
item; ``XComArg`` values are resolved to the upstream's output (never
rendered); ``@dag`` parameters resolve to ``params[name]``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jinja2
import jinja2.nativetypes


class ParamRef:
    """A ``@dag`` function parameter: resolves to ``context['params'][name]``."""

    def __init__(self, name: str):
        self.name = name

    def resolve(self, context: dict) -> Any:
        return context["params"][self.name]

    def __repr__(self) -> str:
        return f"ParamRef({self.name!r})"


_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, cache_size=400)
_NATIVE_ENV = jinja2.nativetypes.NativeEnvironment(undefined=jinja2.StrictUndefined)
_ENV.filters.update(ds=lambda d: d.strftime("%Y-%m-%d"), ts=lambda d: d.isoformat())


@lru_cache(maxsize=1024)
def _compiled(source: str, native: bool) -> jinja2.Template:
    return (_NATIVE_ENV if native else _ENV).from_string(source)


def render_string(template: str, context: dict, *, native: bool = False) -> Any:
    if "{{" not in template and "{%" not in template:
        return template
    return _compiled(template, native).render(**context)


def render_template(value: Any, context: dict, task: Any = None) -> Any:
    from shared.sdk.xcom_arg import XComArg

    native = bool(task is not None and task.dag is not None and task.dag.render_template_as_native_obj)
    if isinstance(value, str):
        return render_string(value, context, native=native)
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
