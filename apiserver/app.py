"""The api-server's app: Airflow's REST API (``/api/v2``), login, and the web UI.

``create_app(settings)`` builds it; the asyncpg pool and the Redis client open
with the app's lifespan. Every route but ``monitor/health`` and ``version``
needs a login token (``apiserver.auth``). A path or method of Airflow's API
that Sluice does not serve answers 404 naming it, and an Airflow filter Sluice
does not have answers 400 naming it, never a silent wrong answer.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from urllib.parse import parse_qs

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from apiserver import auth
from apiserver import models as m
from apiserver.common import ApiState, known_query_only, state_of
from apiserver.config import ApiSettings
from apiserver.routes import dags, monitor, pools, runs, secrets, task_instances, xcom

API_PREFIX = "/api/v2"
TOKEN_COOKIE = "_token"


def current_user(request: Request) -> auth.User:
    """The caller, from ``Authorization: Bearer`` or the UI's ``_token`` cookie; else 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        token = request.cookies.get(TOKEN_COOKIE, "")
    if not token:
        raise HTTPException(401, "Not authenticated", headers={"WWW-Authenticate": "Bearer"})
    try:
        return state_of(request).authenticator.user(token.strip())
    except auth.AuthError as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None


def allow(write_role: str, read_role: str = "viewer"):
    """Reads need ``read_role`` or above (any login by default); other methods need
    ``write_role`` or above."""
    def check(request: Request, user: auth.User = Depends(current_user)) -> auth.User:
        reading = request.method in ("GET", "HEAD")
        needed = read_role if reading else write_role
        if not user.may(needed):
            raise HTTPException(403, f"user {user.name!r} ({user.role}) may not "
                                     f"{request.method} {request.url.path}: it needs the "
                                     f"{needed} role or above")
        return user
    return check


#: Logins verified at once: a password hash costs ~80 ms of CPU, off the event loop.
LOGINS = anyio.CapacityLimiter(4)


async def create_token(request: Request) -> JSONResponse:
    """``POST /auth/token`` (JSON or form): a user name and password for a JWT."""
    raw = await request.body()
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
    try:
        if kind == "application/x-www-form-urlencoded":
            fields = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        elif kind == "application/json":
            fields = json.loads(raw or b"{}")
        else:
            raise HTTPException(415, f"Unsupported Media Type {kind!r}: send "
                                     "application/json or application/x-www-form-urlencoded")
        body = m.LoginBody.model_validate(fields)
    except (ValueError, ValidationError):
        raise HTTPException(400, "Username and password must be provided") from None
    if LOGINS.borrowed_tokens >= LOGINS.total_tokens:
        raise HTTPException(429, "Too many logins at once: try again in a moment")
    try:
        token = await anyio.to_thread.run_sync(
            state_of(request).authenticator.login, body.username, body.password, limiter=LOGINS)
    except auth.AuthError as exc:
        raise HTTPException(401, str(exc)) from None
    return JSONResponse({"access_token": token}, status_code=201)


async def not_in_sluice(request: Request, path: str) -> JSONResponse:
    """A path or method of Airflow's API that Sluice does not serve."""
    return JSONResponse(status_code=404, content={
        "detail": f"Sluice does not implement {request.method} {API_PREFIX}/{path} of "
                  "Airflow's REST API; /openapi.json lists what it serves"})


def _api_router() -> APIRouter:
    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(known_query_only)])
    # variables and connections hold secrets: as in Airflow, a viewer or user cannot read them
    for module, write, read in ((dags, "user", "viewer"), (runs, "user", "viewer"),
                                (task_instances, "user", "viewer"), (xcom, "user", "viewer"),
                                (secrets, "op", "op"), (pools, "op", "viewer")):
        api.include_router(module.router, dependencies=[Depends(allow(write, read))])
    api.include_router(monitor.router)
    api.add_api_route("/{path:path}", not_in_sluice, include_in_schema=False,
                      methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                      dependencies=[Depends(current_user)])
    return api


def make_state(settings: ApiSettings) -> tuple[ApiState, dict[str, str]]:
    """The app's state and the passwords generated for users that had none (to print)."""
    roles = auth.parse_users(settings.api_users)
    hashes, new = auth.ensure_passwords(settings.home, roles)
    key = auth.secret_key(settings.api_secret_key, settings.home)
    authenticator = auth.Authenticator(roles, hashes, key, settings.api_token_ttl_s)
    return ApiState(settings=settings, authenticator=authenticator, users=roles), new


def create_app(settings: ApiSettings, state: ApiState | None = None) -> FastAPI:
    """The api-server's ASGI app; ``state`` from ``make_state`` (made here when not given)."""
    from apiserver import ui
    from shared import bus
    from shared.db import create_pool

    state = state or make_state(settings)[0]
    db_url, redis_url = settings.require_urls()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.pool = await create_pool(db_url)
        state.redis = bus.connect(redis_url)
        try:
            yield
        finally:
            await state.redis.aclose()
            await state.pool.close()

    app = FastAPI(title="Sluice API", version="2", lifespan=lifespan,
                  description="Airflow 3's public REST API (/api/v2), for what Sluice has.")
    app.state.sluice = state
    app.add_api_route("/auth/token", create_token, methods=["POST"], tags=["Login"],
                      status_code=201, response_model=m.LoginResponse,
                      openapi_extra={"requestBody": {"content": {"application/json": {
                          "schema": m.LoginBody.model_json_schema()}}}})
    app.include_router(_api_router())
    ui.mount(app, state)
    return app
