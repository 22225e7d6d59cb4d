"""What every route shares: the server's context, JSON answers, errors, run documents."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from airflow.sdk.api.datamodels._generated import DagRun
from fastapi import HTTPException, Request, Response
from fastapi.responses import JSONResponse

from shared.messages import RunChanged, TriggersPending
from shared.secrets import Secrets
from worker.execution_api.config import ApiSettings

log = structlog.get_logger()

#: Sends wake-ups after a commit (the worker routes them to their streams).
Wake = Callable[[list[RunChanged | TriggersPending]], Awaitable[None]]
#: Told the try whose end (or deferral) was just committed: its worker must not kill it now.
Ended = Callable[[uuid.UUID], None]


@dataclass(frozen=True)
class Api:
    pool: asyncpg.Pool
    settings: ApiSettings
    secrets: Secrets
    token_secret: bytes
    wake: Wake | None = None
    ended: Ended | None = None

    async def notify(self, *messages: RunChanged | TriggersPending) -> None:
        """Wake the scheduler/triggerer; a lost wake-up is caught up by their sweeps."""
        if self.wake is None or not messages:
            return
        try:
            await self.wake(list(messages))
        except Exception as exc:  # noqa: BLE001 - the write is committed; the sweep repairs
            log.warning("wakeup_not_sent", error=str(exc))


def api(request: Request) -> Api:
    return request.app.state.api


def caller(request: Request) -> uuid.UUID:
    """The try whose token authenticated this request (set by the gate)."""
    return request.state.ti_uuid


def problem(status: int, reason: str, message: str, **extra: Any) -> HTTPException:
    """An error answer as Airflow shapes them: ``{"detail": {"reason", "message", ...}}``."""
    return HTTPException(status_code=status, detail={"reason": reason, "message": message, **extra})


def not_implemented(method: str, route: str, what: str | None = None) -> HTTPException:
    """A route or request Sluice does not serve: 400, so the task fails at once naming it.

    Not a 5xx: the SDK's client retries those (five times, about 15 s) before failing.
    """
    about = f" ({what})" if what else ""
    return problem(400, "not_implemented", f"Sluice does not implement {method} {route}{about} yet")


def database_unavailable(path: str, exc: Exception) -> JSONResponse:
    """503, which the SDK's client retries: PostgreSQL did not answer."""
    log.warning("execution_api_database_unavailable", path=path, error=str(exc))
    return JSONResponse({"detail": {"reason": "database_unavailable",
                                    "message": "PostgreSQL is unreachable; retry"}}, status_code=503)


def not_found(message: str) -> HTTPException:
    return problem(404, "not_found", message)


def json_text(text: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """An answer whose body is JSON text already (stored values are sent as stored)."""
    return Response(content=text, status_code=status, media_type="application/json",
                    headers=headers)


def model_response(model, status: int = 200) -> Response:
    return json_text(model.model_dump_json(by_alias=True), status)


def run_after(row) -> Any:
    """When the run was due: a scheduled run after its interval, a manual one at its date."""
    if row["run_type"] == "scheduled" and row["data_interval_end"] is not None:
        return row["data_interval_end"]
    return row["logical_date"] or row["run_created_at"]


def dag_run(row) -> DagRun:
    """The SDK's ``DagRun`` of a ``dag_run`` row (columns as api_run_detail names them).

    An asset-triggered run has no logical date, as in Airflow (Sluice keeps its run-after
    moment in the column); its consumed events are set by the caller that reads them.
    """
    asset_triggered = row["run_type"] == "asset_triggered"
    return DagRun(
        dag_id=row["dag_id"], run_id=row["run_id"],
        logical_date=None if asset_triggered else row["logical_date"],
        data_interval_start=row["data_interval_start"],
        data_interval_end=row["data_interval_end"], run_after=run_after(row),
        start_date=row["run_start_date"], end_date=row["run_end_date"],
        clear_number=row["clear_number"], run_type=row["run_type"], state=row["run_state"],
        conf=row["conf"], consumed_asset_events=[], partition_key=None, note=row["note"],
    )
