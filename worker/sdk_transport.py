"""A lean HTTP/1.1 client for a slot's calls to the Execution API.

The SDK's ``Client`` is an ``httpx.Client``; its default transport goes through
httpcore's connection pool (pool bookkeeping, h11 event objects, trace hooks) on
every call, a large share of a no-op try's CPU. A slot makes one call at a time to
one server, so ``LeanTransport`` keeps one keep-alive socket, writes the request in
one ``sendall`` and parses the response head itself (``Content-Length`` or chunked
bodies). Failures raise the exceptions httpx's own transport raises
(``ConnectError``, ``ReadTimeout``, ``RemoteProtocolError`` ...), so the SDK's
retry policy (retry on any ``httpx.RequestError``) is unchanged.

``LeanClient`` is the SDK's ``Client`` whose plain calls skip httpx's request
building as well (URL parsing and merging, header and cookie merging, the auth
flow's generator, the hooks' dispatch: most of what remained of a call's CPU).
A call is plain when its path and query are made of characters httpx sends
unchanged and its body is bytes or text; the request it writes is the one
httpx would send (method, path, query, the client's headers, the auth header,
``content-type`` as the SDK sets it, a correlation id, trace context), its
answer is an ``httpx.Response``, and a failure goes the SDK's way: a 2xx answer is
returned, any other runs the client's response hooks on a real ``httpx.Request``
(so ``ServerResponseError`` and its notes are the SDK's own), and a retryable
error is retried by the SDK's own ``Retrying`` policy (attempts, waits, log line).
Anything else -- https, files, ``json=``, an unusual character, other hooks or
auth -- is the SDK's ``Client.request`` unchanged.
"""

from __future__ import annotations

import re
import select
import socket
from typing import Any

import httpx
from airflow.sdk.api.client import (
    BearerAuth,
    Client,
    _should_retry_api_request,
    add_correlation_id,
    inject_trace_context,
    raise_on_4xx_5xx,
)
from httpx._client import UseClientDefault
from httpx._content import encode_json

_HEAD_LIMIT = 64 * 1024


class ResponseCookies(httpx.Cookies):
    """A client's cookie jar that reads a response's cookies only when it sets some.

    httpx wraps every response in urllib's request and response types for the jar
    (about a tenth of a call's client CPU); the Execution API sets no cookies.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


# what httpx sends unchanged in a path (unreserved, sub-delims, ":@/") and in a query value
_PLAIN_PATH = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")
_PLAIN_QUERY = re.compile(r"[A-Za-z0-9\-._~]*")
_BODY_METHODS = ("POST", "PUT", "PATCH")


class LeanClient(Client):
    """The SDK's ``Client`` whose plain calls are written and read by ``LeanTransport``
    directly (see the module's docstring); ``transport`` must be a ``LeanTransport``."""

    def __init__(self, *, base_url: str, token: str, transport: LeanTransport) -> None:
        super().__init__(base_url=base_url, token=token, transport=transport)
        self._cookies = ResponseCookies()  # the API sets none: skip the cookie jar
        self.lean = transport
        base = self.base_url
        self._lean_ok = base.scheme == "http" and not self._mounts
        self._key = (base.host, base.port or 80)
        self._base_path = base.raw_path.decode("ascii")
        self._host = base.netloc
        self._head_cache: tuple[tuple, bytes] | None = None
        hooks = self.event_hooks
        self._plain_hooks = (hooks["request"] == [add_correlation_id, inject_trace_context]
                             and hooks["response"] == [self._update_auth, raise_on_4xx_5xx])

    def request(self, method: str, url: Any, *, content: Any = None, params: Any = None,
                headers: Any = None, json: Any = None, **kwargs: Any) -> httpx.Response:
        sent = headers
        if content is not None and "content-type" not in (headers or {}):
            sent = {"content-type": "application/json"}  # as Client.request sets it
        elif content is None and json is not None:
            if not any(name.lower() == "content-type" for name in headers or ()):
                sent = {**(headers or {}), "Content-Type": "application/json"}  # as httpx
            content = b"".join(encode_json(json)[1])  # httpx's own encoding of ``json=``
        plain = (all(v is None or isinstance(v, UseClientDefault) for v in kwargs.values())
                 and self._plain() and isinstance(content, (bytes, str, type(None)))
                 and not any(name in self.headers for name in sent or ()))
        target = self._target(url, params) if plain else None
        if target is None:  # the SDK's own path, as called
            kw = {k: v for k, v in (("content", content if json is None else None),
                                    ("json", json), ("params", params), ("headers", headers))
                  if v is not None}
            return super().request(method, url, **kw, **kwargs)
        body = content.encode() if isinstance(content, str) else content
        args = (method, url, target, body, params, sent)
        try:
            return self._lean_request(*args)
        except Exception as exc:  # noqa: BLE001 - retried as the SDK retries, or raised
            if not _should_retry_api_request(exc):
                raise
            first: Exception | None = exc
        for attempt in Client.request.retry.copy():  # the SDK's own policy, this one its first
            with attempt:
                if first is not None:
                    failed, first = first, None
                    raise failed
                return self._lean_request(*args)
        raise AssertionError("unreachable")

    def _plain(self) -> bool:
        return self._lean_ok and self._plain_hooks and type(self.auth) is BearerAuth

    def _target(self, url: Any, params: Any) -> bytes | None:
        """The request target httpx would send, when it sends ``url`` and ``params`` as is."""
        if not isinstance(url, str) or not _PLAIN_PATH.fullmatch(url) or url.startswith("//"):
            return None
        target = self._base_path + url.lstrip("/")
        if params:
            if not isinstance(params, dict):
                return None
            pairs = []
            for name, value in params.items():
                for each in value if isinstance(value, (list, tuple)) else (value,):
                    text = _query_value(each)
                    if text is None or not _PLAIN_QUERY.fullmatch(name):
                        return None
                    pairs.append(f"{name}={text}")
            if pairs:
                target += "?" + "&".join(pairs)
        return target.encode("ascii")

    def _lean_request(self, method: str, url: str, target: bytes, body: bytes | None,
                      params: Any, headers: dict | None) -> httpx.Response:
        carrier = _Carrier()
        for hook in self.event_hooks["request"]:  # the SDK's: a correlation id, trace context
            hook(carrier)
        extra = carrier.headers
        lines = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\nHost: ", self._host,
                 b"\r\n", self._client_head()]
        for name, value in (*(headers or {}).items(), *extra.items()):
            lines += [name.encode("ascii"), b": ", value.encode("latin-1"), b"\r\n"]
        lines += [b"Authorization: Bearer ", self.auth.token.encode("latin-1"), b"\r\n"]
        if body or method in _BODY_METHODS:
            lines += [b"Content-Length: ", str(len(body or b"")).encode("ascii"), b"\r\n"]
        lines.append(b"\r\n")
        if body:
            lines.append(body)
        status, raw, answer = self.lean.exchange(
            self._key, b"".join(lines), self.timeout.as_dict(), method == "HEAD")
        response = _LeanResponse(status, headers=raw, content=answer,
                                 extensions={"http_version": b"HTTP/1.1"})
        response.sent = lambda: self.build_request(  # noqa: E731 - what httpx would have sent
            method, url, content=body, params=params, headers={**(headers or {}), **extra})
        self._update_auth(response)
        if 200 <= status < 300 and "set-cookie" not in response.headers:
            return response
        # as httpx would end it: the jar, the SDK's response hooks
        self.cookies.extract_cookies(response)
        for hook in self.event_hooks["response"][1:]:
            hook(response)
        return response

    def _client_head(self) -> bytes:
        raw = tuple(self.headers.raw)
        if self._head_cache is None or self._head_cache[0] != raw:
            self._head_cache = (raw, b"".join(n + b": " + v + b"\r\n" for n, v in raw))
        return self._head_cache[1]


class _LeanResponse(httpx.Response):
    """A response whose ``request`` (the ``httpx.Request`` httpx would have sent) is built
    only when something asks for it: an error, a log line."""

    sent: Any = None

    @property
    def request(self) -> httpx.Request:
        if self._request is None and self.sent is not None:
            self._request = self.sent()
        return super().request

    @request.setter
    def request(self, value: httpx.Request) -> None:
        self._request = value


class _Carrier:
    """What the SDK's request hooks write into: the headers they add."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}


def _query_value(value: Any) -> str | None:
    """A query value as httpx words it (``true``, ``false``, empty for None), if sent as is."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and _PLAIN_QUERY.fullmatch(value):
        return value
    return None


class LeanTransport(httpx.BaseTransport):
    """One persistent HTTP/1.1 connection (TCP or unix socket), reopened when closed."""

    def __init__(self, uds: str | None = None) -> None:
        self.uds = uds
        self.sock: socket.socket | None = None
        self.key: tuple | None = None
        self.buf = b""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"lean transport: {request.url.scheme!r} is not http",
                                            request=request)
        url = request.url
        status, headers, body = self.exchange(
            (url.host, url.port or 80), _head(request) + request.read(),
            request.extensions.get("timeout", {}), request.method == "HEAD", request)
        return httpx.Response(status, headers=headers, content=body,
                              extensions={"http_version": b"HTTP/1.1"})

    def exchange(self, key: tuple, data: bytes, timeouts: dict, head: bool,
                 request: httpx.Request | None = None) -> tuple[int, list, bytes]:
        """Send one request's bytes to ``key`` (host, port); its status, headers and body."""
        sock = self._connection(key, timeouts.get("connect"), request)
        try:
            sock.settimeout(timeouts.get("write"))
            _send(sock, data, request)
            sock.settimeout(timeouts.get("read"))
            status, headers, body, keep = self._response(sock, request, head)
        except BaseException:
            self.close()
            raise
        if not keep:
            self.close()
        return status, headers, body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""

    def _connection(self, key: tuple, timeout: float | None,
                    request: httpx.Request | None) -> socket.socket:
        """The kept connection if it is still open and idle, else a new one."""
        if self.sock is not None and (key != self.key or _readable(self.sock)):
            self.close()  # the server closed it (or sent something unasked): start afresh
        if self.sock is None:
            self.sock, self.key = _connect(self.uds, key, timeout, request), key
        return self.sock

    def _response(self, sock: socket.socket, request: httpx.Request | None, head: bool):
        lines = self._until(sock, b"\r\n\r\n", request).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise httpx.RemoteProtocolError(f"malformed status line {lines[0]!r}", request=request)
        headers = []
        length, chunked, keep = None, False, parts[0] == "HTTP/1.1"
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise httpx.RemoteProtocolError(f"malformed header {line!r}", request=request)
            name, value = name.strip(), value.strip()
            headers.append((name, value))
            low = name.lower()
            if low == "content-length":
                length = int(value)
            elif low == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif low == "connection":
                keep = "close" not in value.lower() and (keep or "keep-alive" in value.lower())
        status = int(parts[1])
        if head or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif chunked:
            body = self._chunked(sock, request)
        elif length is not None:
            body = self._exactly(sock, length, request)
        else:
            body, keep = self._to_eof(sock, request), False
        return status, headers, body, keep

    def _recv(self, sock: socket.socket, request: httpx.Request | None) -> bytes:
        try:
            data = sock.recv(65536)
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc), request=request) from exc
        return data

    def _until(self, sock: socket.socket, mark: bytes, request: httpx.Request | None) -> bytes:
        while (end := self.buf.find(mark)) < 0:
            if len(self.buf) > _HEAD_LIMIT:
                raise httpx.RemoteProtocolError("response head too long", request=request)
            data = self._recv(sock, request)
            if not data:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                                request=request)
            self.buf += data
        found, self.buf = self.buf[:end], self.buf[end + len(mark):]
        return found

    def _exactly(self, sock: socket.socket, n: int, request: httpx.Request | None) -> bytes:
        while len(self.buf) < n:
            data = self._recv(sock, request)
            if not data:
                raise httpx.RemoteProtocolError("peer closed connection without sending complete "
                                                "message body", request=request)
            self.buf += data
        found, self.buf = self.buf[:n], self.buf[n:]
        return found

    def _chunked(self, sock: socket.socket, request: httpx.Request | None) -> bytes:
        parts = []
        while True:
            size_line = self._until(sock, b"\r\n", request).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise httpx.RemoteProtocolError(f"malformed chunk size {size_line!r}",
                                                request=request) from None
            if size == 0:
                while self._until(sock, b"\r\n", request):  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            parts.append(self._exactly(sock, size, request))
            self._exactly(sock, 2, request)

    def _to_eof(self, sock: socket.socket, request: httpx.Request | None) -> bytes:
        parts = [self.buf]
        while data := self._recv(sock, request):
            parts.append(data)
        self.buf = b""
        return b"".join(parts)


def _head(request: httpx.Request) -> bytes:
    """The request line and headers; httpx has already set Host and Content-Length."""
    lines = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        lines += [name, b": ", value, b"\r\n"]
    lines.append(b"\r\n")
    return b"".join(lines)


def _send(sock: socket.socket, data: bytes, request: httpx.Request | None) -> None:
    try:
        sock.sendall(data)
    except TimeoutError as exc:
        raise httpx.WriteTimeout(str(exc) or "timed out", request=request) from exc
    except OSError as exc:
        raise httpx.WriteError(str(exc), request=request) from exc


def _connect(uds: str | None, key: tuple, timeout: float | None,
             request: httpx.Request | None) -> socket.socket:
    try:
        if uds:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(uds)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection(key, timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except TimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "timed out", request=request) from exc
    except OSError as exc:
        raise httpx.ConnectError(str(exc), request=request) from exc
    return sock


def _readable(sock: socket.socket) -> bool:
    """True when an idle connection has something to read: the server's close (EOF)."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True
