"""Which instances start in the triggerer, and with what: pure, from serialized literals.

Per map index: the expanded value, else ``partial``/``__init__``, else the
class. Templated trigger kwargs are rendered here from the run's context
(never from task outputs), in a sandboxed Jinja environment since the
scheduler runs no user code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import Template

from scheduler import macros
from scheduler.templating import environment
from shared.serde import TAG
from shared.serialization import TaskSpec

_ENV = environment()  # the task templates' sandbox


@dataclass(frozen=True)
class StartArgs:
    classpath: str
    next_method: str
    trigger_kwargs: dict
    next_kwargs: dict
    timeout_s: float | None


def start_args(task: TaskSpec, map_index: int) -> StartArgs | None:
    """The trigger to start this instance with, or ``None`` to run it on a worker."""
    st = task.start_trigger
    if st is None:
        return None
    values = dict(st["base"])
    per = st.get("per_index")
    if per and map_index >= 0:
        values.update(_index_values(per, map_index))
    if not values.get("start_from_trigger"):
        return None
    return StartArgs(st["trigger_cls"], st["next_method"], values.get("trigger_kwargs") or {},
                     values.get("next_kwargs") or {}, values.get("trigger_timeout"))


def _index_values(per: dict, map_index: int) -> dict:
    if per["kind"] == "list":
        return per["items"][map_index] if map_index < len(per["items"]) else {}
    positions: dict[str, int] = {}
    rest = map_index
    for key, n in zip(reversed(per["order"]), reversed(per["lengths"]), strict=True):
        positions[key] = rest % n if n else 0
        rest //= n or 1
    return {k: vals[positions[k]] for k, vals in per["values"].items()}


def run_context(dag_id: str, run_id: str, logical_date: datetime, conf: dict, params: dict,
                task_id: str, map_index: int) -> dict:
    return {"dag_id": dag_id, "run_id": run_id, "logical_date": logical_date,
            "ds": logical_date.strftime("%Y-%m-%d"), "ds_nodash": logical_date.strftime("%Y%m%d"),
            "ts": logical_date.isoformat(), "params": {**params, **conf},
            "dag_run": {"conf": conf, "run_id": run_id}, "task_id": task_id, "map_index": map_index,
            "macros": macros}


@lru_cache(maxsize=1024)
def _template(source: str) -> Template:
    """Compiled once per source: 10,000 instances of one task share their templates."""
    return _ENV.from_string(source)


def render(value: Any, context: dict) -> Any:
    """Render every string in JSON-ish ``value`` (tagged values kept as they are)."""
    if isinstance(value, str):
        return _template(value).render(**context) if "{" in value else value
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if isinstance(value, dict):
        if TAG in value:
            return value
        return {k: render(v, context) for k, v in value.items()}
    return value
