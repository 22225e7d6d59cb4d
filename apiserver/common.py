"""What every route of the api-server shares: its state, errors, filters and wake-ups."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from fastapi import HTTPException, Request

from apiserver.auth import Authenticator
from apiserver.config import ApiSettings

log = structlog.get_logger()


@dataclass
class ApiState:
    """The api-server's shared state (``app.state.sluice``), also handed to the web UI.

    ``pool`` (asyncpg, JSON decoded) and ``redis`` are set when the app starts.
    ``authenticator`` logs users in and reads tokens; ``users`` maps each
    configured user to its role.
    """

    settings: ApiSettings
    authenticator: Authenticator
    users: dict[str, str]
    pool: asyncpg.Pool | None = None
    redis: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def state_of(request: Request) -> ApiState:
    return request.app.state.sluice


def db(request: Request) -> asyncpg.Pool:
    return state_of(request).pool


def not_found(what: str) -> HTTPException:
    return HTTPException(404, f"{what} not found")


def unsupported(what: str) -> HTTPException:
    """A part of Airflow's API that Sluice does not have: a 400 naming it."""
    return HTTPException(400, f"Sluice does not support {what}")


_QUERY_NAMES: dict[int, frozenset[str]] = {}  # by id(route): routes live as long as the app


def _query_names(route) -> frozenset[str]:
    """Every query parameter ``route`` and its dependencies take."""
    found = _QUERY_NAMES.get(id(route))
    if found is not None:
        return found
    names, todo = set(), [route.dependant]
    while todo:
        dependant = todo.pop()
        names.update(p.alias for p in dependant.query_params)
        todo.extend(dependant.dependencies)
    return _QUERY_NAMES.setdefault(id(route), frozenset(names))


async def known_query_only(request: Request) -> None:
    """Refuse a query parameter the route does not take, naming it (Airflow's API has
    filters Sluice does not; silently ignoring one would answer a different question)."""
    route = request.scope.get("route")
    if route is None:
        return
    extra = sorted(set(request.query_params) - _query_names(route))
    if extra:
        raise unsupported(f"the query parameter(s) {', '.join(extra)} of "
                          f"{request.method} {route.path}")


def patterns(value: str | None) -> list[str] | None:
    """Airflow's ``*_pattern``: case-insensitive substrings, ``|`` between alternatives,
    ``~`` for everything; as ILIKE patterns (None: no filter)."""
    if value is None or value == "~":
        return None
    return [f"%{part}%" for part in value.split("|")]


def prefixes(value: str | None) -> list[str] | None:
    """Airflow's ``*_prefix_pattern``: literal prefixes, ``|`` between alternatives."""
    if value is None or value == "~":
        return None
    return [part.rstrip("/:_-. ") for part in value.split("|")]


def every(value: str) -> str | None:
    """A path's ``~`` (every DAG, run or task) as no filter."""
    return None if value == "~" else value


def order_key(order_by: list[str] | None, allowed: set[str], route: str) -> str:
    """The first ``order_by`` key, checked against the ones the route sorts by."""
    key = (order_by or [""])[0]
    if key and key.lstrip("-") not in allowed:
        raise HTTPException(400, f"Ordering with '{key}' is disallowed or the attribute does "
                                 f"not exist on {route}; Sluice sorts by: "
                                 f"{', '.join(sorted(allowed))}")
    return key


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def utcnow() -> datetime:
    return datetime.now(UTC)


def file_token(fileloc: str) -> str:
    return base64.urlsafe_b64encode(fileloc.encode()).decode().rstrip("=")


def import_error_id(fileloc: str) -> int:
    """A stable integer id of a file's import error (Sluice keys them by file): the first
    six bytes of the path's SHA-256, exact in any JSON reader."""
    return int.from_bytes(hashlib.sha256(fileloc.encode()).digest()[:6], "big")


def relative_fileloc(fileloc: str, dags_folder: os.PathLike) -> str:
    try:
        return os.path.relpath(fileloc, os.path.abspath(dags_folder))
    except ValueError:
        return os.path.basename(fileloc)


async def wake_scheduler(request: Request, run_pk: int) -> None:
    """Tell the scheduler about a run changed by hand; if Redis is away, its repair sweep
    finds the run (PostgreSQL holds the change either way)."""
    from shared import bus
    from shared.messages import RunChanged

    state = state_of(request)
    item = (bus.Streams(state.settings.stream_prefix).events, RunChanged(run_pk=run_pk))
    try:
        await bus.publish(state.redis, [item])
    except Exception as exc:  # noqa: BLE001 - a wake-up is best effort by design
        log.warning("wake_up_not_sent", run_pk=run_pk, error=str(exc))
