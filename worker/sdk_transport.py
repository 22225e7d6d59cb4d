"""A lean HTTP/1.1 transport for a slot's Execution API client.

The SDK's ``Client`` is an ``httpx.Client``; its default transport goes through
httpcore's connection pool (pool bookkeeping, h11 event objects, trace hooks) on
every call, a large share of a no-op try's CPU. A slot makes one call at a time to
one server, so this keeps one keep-alive socket, writes the request in one
``sendall`` and parses the response head itself (``Content-Length`` or chunked
bodies). Failures raise the exceptions httpx's own transport raises
(``ConnectError``, ``ReadTimeout``, ``RemoteProtocolError`` ...), so the SDK's
retry policy (retry on any ``httpx.RequestError``) is unchanged.
"""

from __future__ import annotations

import select
import socket

import httpx

_HEAD_LIMIT = 64 * 1024


class ResponseCookies(httpx.Cookies):
    """A client's cookie jar that reads a response's cookies only when it sets some.

    httpx wraps every response in urllib's request and response types for the jar
    (about a tenth of a call's client CPU); the Execution API sets no cookies.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


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
        timeouts = request.extensions.get("timeout", {})
        sock = self._connection(request, timeouts.get("connect"))
        try:
            sock.settimeout(timeouts.get("write"))
            _send(sock, _head(request) + request.read(), request)
            sock.settimeout(timeouts.get("read"))
            status, headers, body, keep = self._response(sock, request)
        except BaseException:
            self.close()
            raise
        if not keep:
            self.close()
        return httpx.Response(status, headers=headers, content=body,
                              extensions={"http_version": b"HTTP/1.1"})

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""

    def _connection(self, request: httpx.Request, timeout: float | None) -> socket.socket:
        """The kept connection if it is still open and idle, else a new one."""
        url = request.url
        key = (url.host, url.port or 80)
        if self.sock is not None and (key != self.key or _readable(self.sock)):
            self.close()  # the server closed it (or sent something unasked): start afresh
        if self.sock is None:
            self.sock, self.key = _connect(self.uds, key, timeout, request), key
        return self.sock

    def _response(self, sock: socket.socket, request: httpx.Request):
        head = self._until(sock, b"\r\n\r\n", request)
        lines = head.decode("latin-1").split("\r\n")
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
        if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif chunked:
            body = self._chunked(sock, request)
        elif length is not None:
            body = self._exactly(sock, length, request)
        else:
            body, keep = self._to_eof(sock, request), False
        return status, headers, body, keep

    def _recv(self, sock: socket.socket, request: httpx.Request) -> bytes:
        try:
            data = sock.recv(65536)
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc), request=request) from exc
        return data

    def _until(self, sock: socket.socket, mark: bytes, request: httpx.Request) -> bytes:
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

    def _exactly(self, sock: socket.socket, n: int, request: httpx.Request) -> bytes:
        while len(self.buf) < n:
            data = self._recv(sock, request)
            if not data:
                raise httpx.RemoteProtocolError("peer closed connection without sending complete "
                                                "message body", request=request)
            self.buf += data
        found, self.buf = self.buf[:n], self.buf[n:]
        return found

    def _chunked(self, sock: socket.socket, request: httpx.Request) -> bytes:
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

    def _to_eof(self, sock: socket.socket, request: httpx.Request) -> bytes:
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


def _send(sock: socket.socket, data: bytes, request: httpx.Request) -> None:
    try:
        sock.sendall(data)
    except TimeoutError as exc:
        raise httpx.WriteTimeout(str(exc) or "timed out", request=request) from exc
    except OSError as exc:
        raise httpx.WriteError(str(exc), request=request) from exc


def _connect(uds: str | None, key: tuple, timeout: float | None,
             request: httpx.Request) -> socket.socket:
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
