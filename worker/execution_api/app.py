"""The Execution API app: Airflow's Task SDK talks to Sluice through it.

Every route ``airflow.sdk.api.client.Client`` calls is mounted; one Sluice does not
implement answers 400 with a detail naming it (never a hang, never a silent 404, never
a 5xx the SDK would retry for 15 s).
A database outage answers 503, which the SDK's client retries.
"""

from __future__ import annotations

import contextlib
import socket

import asyncpg
import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shared.db import DB_ERRORS
from shared.secrets import Secrets, SecretsError, load_key_text
from worker.execution_api import (
    assets,
    dag_runs,
    task_instances,
    task_state_store,
    variables,
    xcoms,
)
from worker.execution_api.common import Api, Ended, Wake, database_unavailable
from worker.execution_api.common import not_implemented as unimplemented
from worker.execution_api.config import ApiSettings
from worker.execution_api.fast import FastRoutes
from worker.execution_api.gate import Gate, Live

log = structlog.get_logger()
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def create_app(pool: asyncpg.Pool, settings: ApiSettings, *, wake: Wake | None = None,
               ended: Ended | None = None, live: Live | None = None) -> Gate:
    """The app over ``pool``; ``wake`` sends wake-ups after state changes (none: sweeps);
    ``ended`` is told each try whose end or deferral was committed; ``live`` says whether
    a try still runs here (only then is its token renewed).

    The gate and the lean router (``FastRoutes``) come first, outside FastAPI's own
    layers, which only the calls the lean router leaves see. An unexpected error in
    those two is uvicorn's 500, the answer FastAPI's error layer would give."""
    fernet_key = settings.fernet_key.get_secret_value() if settings.fernet_key else None
    secret = settings.api_token_secret.get_secret_value().encode()
    app = FastAPI(title="Sluice Execution API", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.api = Api(pool, settings, Secrets(load_key_text(fernet_key, settings.home)),
                        secret, wake, ended)
    app.include_router(task_instances.router, prefix="/task-instances")
    app.include_router(task_instances.reschedules, prefix="/task-reschedules")
    app.include_router(xcoms.router, prefix="/xcoms")
    app.include_router(xcoms.elements, prefix=xcoms.ELEMENTS)
    app.include_router(variables.variables, prefix="/variables")
    app.include_router(variables.connections, prefix="/connections")
    app.include_router(dag_runs.runs, prefix="/dag-runs")
    app.include_router(dag_runs.dags, prefix="/dags")
    app.include_router(assets.assets, prefix="/assets")
    app.include_router(assets.asset_events, prefix="/asset-events")
    app.include_router(task_state_store.router, prefix="/store/ti")
    app.add_api_route("/health/ping", lambda: {"ok": True}, methods=["GET"])
    app.add_api_route("/{path:path}", not_implemented, methods=ALL_METHODS)
    for error in DB_ERRORS:
        app.add_exception_handler(error, database_unavailable_handler)
    app.add_exception_handler(SecretsError, undecryptable)
    return Gate(FastRoutes(app, api=app.state.api), secret=secret,
                ttl_s=settings.api_token_ttl_s, live=live)


async def not_implemented(request: Request, path: str) -> None:
    raise unimplemented(request.method, f"/{path}")


async def database_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    return database_unavailable(request.url.path, exc)


async def undecryptable(request: Request, exc: SecretsError) -> JSONResponse:
    log.error("execution_api_secret_undecryptable", path=request.url.path)
    return JSONResponse({"detail": {"reason": "undecryptable", "message": str(exc)}},
                        status_code=500)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free one); connections queue before serving starts.

    Made with ``IPPROTO_TCP`` and ``TCP_NODELAY``: asyncio disables Nagle only on
    sockets whose protocol says TCP, and a response sent as headers then body would
    otherwise wait for the client's delayed ACK (measured: 40 ms per call).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside a daemon's event loop: the daemon owns the signals."""

    def capture_signals(self):
        return contextlib.nullcontext()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve until told to exit or cancelled; either way its listeners leave the loop
        (a cancelled uvicorn keeps them registered, and a later socket given the same
        descriptor number would never be served) and its connections close."""
        try:
            await super().serve(sockets)
        finally:
            for server in getattr(self, "servers", []):
                server.close()
            for connection in list(self.server_state.connections):
                connection.shutdown()


def embedded_server(app) -> uvicorn.Server:
    """A server for ``app`` (keep-alive, no access log, no proxy headers: its clients are
    local task processes); ``should_exit = True`` stops it."""
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False,
                            timeout_keep_alive=75, proxy_headers=False)
    return _EmbeddedServer(config)


async def serve(app, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until cancelled."""
    await embedded_server(app).serve(sockets=[sock])
