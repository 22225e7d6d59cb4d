"""The worker's HTTP sides: the logs of the tries it ran, and its metrics and health.

As Airflow's worker log server does, each worker serves the files of its own
logs folder, ``GET /log/<path>?offset=N``, to whoever shows a token for that
one file (``shared.tasklogs``: short-lived, signed with a key every host of the
installation derives from the shared Fernet key). Never open: no token, no
bytes, and no path outside the logs folder. Its URL is registered (table
``worker``) and each claim records the worker with the try (``task_log``), so
``sluice tasks logs``, the API and the UI on any host find it. ``/metrics`` and ``/health`` are on their own port (``shared.metrics``).
"""

from __future__ import annotations

import functools
import socket
from pathlib import Path

import anyio
import structlog

from shared import httpside, metrics
from shared.db import persist, q
from shared.tasklogs import (
    MORE_HEADER,
    LogAuthError,
    inside,
    read_chunk,
    signing_keys,
    verify_token,
)

log = structlog.get_logger()


def log_routes(logs_dir: Path, keys: list[bytes]) -> dict[str, httpside.Handler]:
    """``/log/<path>``: whole lines of one log file from ``offset``, for a valid token."""
    async def serve_log(request: httpside.Request) -> httpside.Response:
        relpath = request.path.removeprefix("/log/")
        token = _bearer(request.headers.get("authorization", ""))
        if token is None:
            return httpside.text(401, "a bearer token is required")
        try:
            verify_token(token, keys, relpath)
        except LogAuthError as exc:
            return httpside.text(403, str(exc))
        path = inside(logs_dir, relpath)
        offset = request.query.get("offset", "0")
        if path is None or not offset.isdigit():
            return httpside.text(400, "bad log path or offset")
        piece = await anyio.to_thread.run_sync(read_chunk, path, int(offset))
        if piece is None:
            return httpside.text(404, "no such log file")
        return httpside.Response(200, piece.data, "application/x-ndjson",
                                 ((MORE_HEADER, "1" if piece.more else "0"),))

    return {"/log/": serve_log}


async def register(worker, log_url: str | None) -> None:
    """Tell PostgreSQL where this worker serves task logs (each claim records the worker
    with the try), retried through an outage: before the worker claims anything."""
    async def write() -> None:
        async with worker.pool.acquire() as conn:
            await conn.execute(q("register_worker"), worker.id, socket.gethostname(), log_url)

    await persist(write, what="register_worker")


def _bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def advertised_url(settings, port: int) -> str:
    """The URL other hosts reach this worker's log server at."""
    host = settings.worker_log_hostname
    if not host:
        bound = settings.worker_log_host
        host = socket.getfqdn() if bound in ("", "0.0.0.0", "::") else bound
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve_sides(worker, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
    """Serve the worker's logs and metrics until cancelled.

    Started before the worker claims anything: its log server's URL is registered
    first, so every try it claims can be read from other hosts.
    """
    s = worker.settings
    async with anyio.create_task_group() as tg:
        listener = await httpside.listen(s.worker_log_host, s.worker_log_port,
                                         setting="SLUICE_WORKER_LOG_PORT",
                                         explicit=metrics.explicit(s, "worker_log_port"))
        url = None if listener is None else advertised_url(s, httpside.bound_port(listener))
        await register(worker, url)
        if listener is not None:
            tg.start_soon(httpside.serve, listener, log_routes(s.logs_dir, signing_keys(s)))
            log.info("task_logs_serving", url=url, logs_folder=str(s.logs_dir))
        await tg.start(functools.partial(
            metrics.serve, metrics.worker_side(worker), s.metrics_host, s.worker_metrics_port,
            setting="SLUICE_WORKER_METRICS_PORT",
            explicit=metrics.explicit(s, "worker_metrics_port")))
        task_status.started()
