"""A run's ``conf`` checked against its DAG's ``Param`` schemas, as Airflow checks a trigger.

Airflow validates every run it creates (``create_dagrun``: the DAG's params
deep-merged with the run's conf, then each param resolved against its JSON
schema) and refuses the run when one does not resolve. Sluice does the same
in ``scheduler.runs.create_manual_run``, the one function every manual run
goes through (``sluice dags trigger``, the REST API, a task triggering a DAG
through the Execution API), so no entry point can skip it.

What tasks then see as ``params`` is the Task SDK's own computation
(``process_params``: DAG params, task params, then the run's conf when
``[core] dag_run_conf_overrides_params``); the run stores the conf as given.

Scheduled runs need no check here: the Task SDK refuses, when the DAG file is
imported, a scheduled DAG whose defaults do not validate or whose params lack
a default, so such a DAG is an import error and never gets a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from shared.db import q

__all__ = ["ParamsError", "check_conf", "check_run_conf"]


class ParamsError(Exception):
    """A run's conf does not validate against its DAG's params (one line, DAG and param named).

    Not a ``ValueError``: callers map a duplicate run to "already exists" and
    this to "bad request", and must not confuse the two.
    """


def check_conf(dag_id: str, params: Mapping[str, Any], schemas: Mapping[str, Mapping[str, Any]],
               conf: Mapping[str, Any]) -> None:
    """Raise :class:`ParamsError` unless every param of the DAG resolves with ``conf``.

    ``params`` are the DAG's defaults and ``schemas`` what ``DagSpec.param_schemas``
    keeps for each ``Param`` with a schema, a description or no default. A key of
    ``conf`` the DAG does not declare is accepted, as Airflow accepts it.
    """
    for key in params:
        spec = schemas.get(key, {})
        if key not in conf and spec.get("required"):
            raise ParamsError(f"DAG {dag_id!r}: invalid input for param {key!r}: no value "
                              "passed (it has no default; give it in the run's conf)")
        value = conf[key] if key in conf else params[key]
        problem = schema_problem(value, spec.get("schema") or {})
        if problem is not None:
            raise ParamsError(f"DAG {dag_id!r}: invalid input for param {key!r}: {problem}")


def schema_problem(value: Any, schema: Mapping[str, Any]) -> str | None:
    """Why ``value`` does not validate against ``schema`` (JSON Schema, with formats), in one line."""
    from jsonschema import FormatChecker
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    if not schema:
        return None
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
        error = next(iter(cls(schema, format_checker=FormatChecker()).iter_errors(value)), None)
    except SchemaError as exc:
        return f"its schema is not valid JSON Schema: {_one_line(exc.message)}"
    if error is None:
        return None
    where = "".join(f"[{p!r}]" for p in error.absolute_path)
    return _one_line(f"{where + ': ' if where else ''}{error.message}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


async def check_run_conf(conn: asyncpg.Connection, dag_id: str, conf: Mapping[str, Any]) -> None:
    """:func:`check_conf` against the DAG as the scheduler last stored it (unknown DAG: no check)."""
    row = await conn.fetchrow(q("dag_params"), dag_id)
    if row is None:
        return
    check_conf(dag_id, row["params"] or {}, row["param_schemas"] or {}, conf)
