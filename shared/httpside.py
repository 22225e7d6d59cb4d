"""A daemon's HTTP side: a few GET routes (``/metrics``, ``/health``, a worker's task logs).

Each daemon answers a handful of small GET requests next to its real work, so
this is a minimal HTTP/1.1 server on the daemon's own event loop rather than a
web framework per daemon: one request per connection, headers capped at
16 KiB and read within 10 s, ``Content-Length`` responses, nothing but GET and
HEAD. It never blocks the daemon: a slow or broken client costs its own
connection only.

Ports: 0 takes any free port, -1 turns the server off. A default port that is
taken (a second worker on the host, say) falls back to a free one, logged with
the port chosen; a port set explicitly must be free, or the daemon does not start.
"""

from __future__ import annotations

import errno
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import structlog
from anyio.abc import SocketAttribute, SocketListener, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

log = structlog.get_logger()

MAX_HEAD_BYTES = 16 * 1024
READ_TIMEOUT_S = 10.0
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error",
            503: "Service Unavailable"}


class PortTaken(RuntimeError):
    """An explicitly configured port is in use (the message names the setting)."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # percent-decoded
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Awaitable[Response]]


def text(status: int, message: str) -> Response:
    return Response(status, (message + "\n").encode())


async def listen(host: str, port: int, *, setting: str, explicit: bool) -> SocketListener | None:
    """A listener on ``host:port`` (see the module's rules for 0, -1 and a taken port)."""
    if port < 0:
        return None
    try:
        return await anyio.create_tcp_listener(local_host=host, local_port=port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or port == 0:
            raise
        if explicit:
            raise PortTaken(f"{setting}={port}: {host}:{port} is already in use") from None
    listener = await anyio.create_tcp_listener(local_host=host, local_port=0)
    log.warning("default_port_taken", setting=setting, port=port, serving_on=bound_port(listener))
    return listener


def bound_port(listener: SocketListener) -> int:
    return listener.extra(SocketAttribute.local_port)


MAX_CONNECTIONS = 64


async def serve(listener: SocketListener, routes: dict[str, Handler]) -> None:
    """Answer requests until cancelled. ``routes`` maps a path, or a prefix ending in
    ``/``, to its handler.

    A flood costs only itself: past ``MAX_CONNECTIONS`` open at once a new one is
    closed at once, and a failing ``accept`` (no descriptors left) is logged and
    retried — the daemon beside this server never stops for it.
    """
    open_now = 0

    async def one(stream: SocketStream) -> None:
        nonlocal open_now
        if open_now >= MAX_CONNECTIONS:
            await stream.aclose()
            return
        open_now += 1
        try:
            await _connection(stream, routes)
        finally:
            open_now -= 1

    async with listener:
        while True:
            try:
                await listener.serve(one)
            except* OSError as group:
                log.warning("http_accept_failed", error=str(group.exceptions[0]))
                await anyio.sleep(0.5)


async def _connection(stream: SocketStream, routes: dict[str, Handler]) -> None:
    async with stream:
        try:
            with anyio.fail_after(READ_TIMEOUT_S):
                head = await BufferedByteReceiveStream(stream).receive_until(
                    b"\r\n\r\n", MAX_HEAD_BYTES)
            request = _parse(head)
        except (TimeoutError, anyio.EndOfStream, anyio.IncompleteRead, anyio.DelimiterNotFound,
                anyio.BrokenResourceError, anyio.ClosedResourceError):
            return
        except ValueError as exc:
            await _send(stream, "GET", text(400, str(exc)))
            return
        await _send(stream, request.method, await _answer(request, routes))


async def _answer(request: Request, routes: dict[str, Handler]) -> Response:
    if request.method not in ("GET", "HEAD"):
        return text(405, f"{request.method} is not served here")
    handler = _route(request.path, routes)
    if handler is None:
        return text(404, f"no such path: {request.path}")
    try:
        return await handler(request)
    except Exception as exc:  # noqa: BLE001 - one bad request must not reach the daemon
        log.exception("http_request_failed", path=request.path, error=str(exc))
        return text(500, "internal error")


def _route(path: str, routes: dict[str, Handler]) -> Handler | None:
    if path in routes:
        return routes[path]
    prefixes = [p for p in routes if p.endswith("/") and path.startswith(p)]
    return routes[max(prefixes, key=len)] if prefixes else None


def _parse(head: bytes) -> Request:
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise ValueError("malformed request line") from None
    if not version.startswith("HTTP/1."):
        raise ValueError(f"unsupported protocol {version}")
    headers = {}
    for each in lines[1:]:
        name, sep, value = each.partition(":")
        if not sep:
            raise ValueError("malformed header line")
        headers[name.strip().lower()] = value.strip()
    url = urllib.parse.urlsplit(target)
    return Request(method, urllib.parse.unquote(url.path),
                   dict(urllib.parse.parse_qsl(url.query)), headers)


async def _send(stream: SocketStream, method: str, response: Response) -> None:
    head = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
            f"Content-Type: {response.content_type}", f"Content-Length: {len(response.body)}",
            "Connection: close", "Cache-Control: no-store",
            *(f"{k}: {v}" for k, v in response.headers)]
    payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    try:
        await stream.send(payload + (b"" if method == "HEAD" else response.body))
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
