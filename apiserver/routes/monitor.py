"""``/api/v2/monitor/health`` and ``/api/v2/version``: answered without login.

Health is read where each part shows it: the database answers a query; the
scheduler is healthy while it reads its event stream (its consumer's idle
time, which a blocked read keeps under 30 s); a triggerer while its heartbeat
is fresh.
"""

from __future__ import annotations

from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Request

from apiserver import models as m
from apiserver.common import state_of, utcnow
from apiserver.sql import q
from shared import bus

router = APIRouter(tags=["Monitor", "Version"])
SCHEDULER_IDLE_LIMIT = timedelta(seconds=60)


def _status(healthy: bool | None) -> str | None:
    return None if healthy is None else "healthy" if healthy else "unhealthy"


async def _scheduler(request: Request) -> dict:
    state = state_of(request)
    try:
        consumers = await state.redis.xinfo_consumers(
            bus.Streams(state.settings.stream_prefix).events, bus.SCHEDULER_GROUP)
    except Exception:  # noqa: BLE001 - no Redis or no group: no scheduler is reading
        consumers = []
    idle = min((c["idle"] for c in consumers), default=None)
    if idle is None:
        return {"status": "unhealthy", "latest_scheduler_heartbeat": None}
    seen = utcnow() - timedelta(milliseconds=idle)
    return {"status": _status(timedelta(milliseconds=idle) < SCHEDULER_IDLE_LIMIT),
            "latest_scheduler_heartbeat": seen.isoformat()}


@router.get("/monitor/health", response_model=m.HealthInfoResponse)
async def get_health(request: Request) -> dict:
    state = state_of(request)
    try:
        row = await state.pool.fetchrow(q("health"))
    except Exception:  # noqa: BLE001 - an unreachable database is the answer itself
        row = None
    beat = row["triggerer_heartbeat"] if row else None
    limit = timedelta(seconds=state.settings.triggerer_heartbeat_timeout_s)
    return {
        "metadatabase": {"status": _status(row is not None)},
        "scheduler": await _scheduler(request),
        "triggerer": {"status": _status(beat is not None and utcnow() - beat < limit),
                      "latest_triggerer_heartbeat": beat.isoformat() if beat else None},
        "dag_processor": None,
    }


@router.get("/version", response_model=m.VersionInfo)
async def get_version() -> dict:
    try:
        found = version("sluice")
    except PackageNotFoundError:
        found = "unknown"
    return {"version": found, "git_version": None}
