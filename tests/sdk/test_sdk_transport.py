"""A slot's lean Execution API transport: same answers and errors as httpx's, less CPU.

The API is the real ``python -m worker.execution_api`` on PostgreSQL; the odd server
behaviours (a closed keep-alive connection, chunked bodies, no server at all) are
real sockets.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
from airflow.sdk.api.client import Client, _should_retry_api_request

from tests.sdk.test_execution_api import (  # noqa: F401 - the module's fixtures
    SECRET,
    TTL_S,
    api_db,
    api_home,
    db,
    prefix,
    seed,
    server,
)
from tests.sdk.test_execution_api_perf import cpu_seconds, run_no_op
from worker.sdk_transport import LeanTransport, ResponseCookies

WARMUP, MEASURED = 20, 300


async def test_no_op_tries_cost_the_client_less_cpu_than_httpx_default(server, db):  # noqa: F811
    base_url, pid = server
    run_pk, tis = await seed(db, "lean", "run-1", [("extract", i) for i in range(2 * (WARMUP + MEASURED))])
    ordered = [tis[("extract", i)] for i in range(2 * (WARMUP + MEASURED))]
    cost = {}
    for name, kwargs, batch in (("httpx", {}, ordered[:WARMUP + MEASURED]),
                                ("lean", {"transport": LeanTransport()}, ordered[WARMUP + MEASURED:])):
        client = Client(base_url=base_url, token="", **kwargs)
        for ti in batch[:WARMUP]:
            run_no_op(client, ti, None)
        before, server_before = time.process_time(), cpu_seconds(pid)
        for ti in batch[WARMUP:]:
            run_no_op(client, ti, None)
        cost[name] = ((time.process_time() - before) / MEASURED * 1000,
                      (cpu_seconds(pid) - server_before) / MEASURED * 1000)
        client.close()
    done = await db.fetchval("SELECT count(*) FROM task_instance WHERE run_pk = $1 "
                             "AND state = 'success' AND rendered_fields IS NOT NULL", run_pk)
    assert done == 2 * (WARMUP + MEASURED)
    print(f"\nclient CPU per no-op (3 calls): httpx {cost['httpx'][0]:.2f} ms, "
          f"lean {cost['lean'][0]:.2f} ms; server {cost['httpx'][1]:.2f} / {cost['lean'][1]:.2f} ms")
    assert cost["lean"][0] < cost["httpx"][0]


class OneShotServer:
    """A loopback server answering each request with ``reply``; closes after ``per_conn``."""

    def __init__(self, reply: bytes, per_conn: int):
        self.reply, self.per_conn = reply, per_conn
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.connections, self.requests = 0, []
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.closed.clear()
            with conn:
                buf = b""
                for _ in range(self.per_conn):
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            break
                        buf += data
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    if not head:
                        break
                    self.requests.append(head.split(b"\r\n")[0])
                    conn.sendall(self.reply)
            self.closed.set()

    def close(self):
        self.sock.close()


REPLY = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n"
         b'{"ok":true}')


def test_a_connection_the_server_closed_is_reopened_and_kept_alive_otherwise():
    closing = OneShotServer(REPLY, per_conn=1)
    keeping = OneShotServer(REPLY, per_conn=3)
    try:
        with httpx.Client(transport=LeanTransport()) as client:
            for n in range(3):
                assert client.get(closing.url + f"c{n}").json() == {"ok": True}
                assert closing.closed.wait(5)  # the server has closed its end
            for n in range(3):
                assert client.get(keeping.url + f"k{n}").json() == {"ok": True}
        assert closing.connections == 3
        assert keeping.connections == 1
        assert keeping.requests == [b"GET /k0 HTTP/1.1", b"GET /k1 HTTP/1.1", b"GET /k2 HTTP/1.1"]
    finally:
        closing.close()
        keeping.close()


def test_chunked_bodies_and_connection_close_are_read_whole():
    chunked = OneShotServer(b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n"
                            b"4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n", per_conn=2)
    until_eof = OneShotServer(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n[1, 2]", per_conn=1)
    try:
        with httpx.Client(transport=LeanTransport()) as client:
            first, second = client.get(chunked.url), client.post(chunked.url, json={"x": 1})
            assert (first.status_code, first.json(), second.json()) == (201, {"a": 1}, {"a": 1})
            assert client.get(until_eof.url).json() == [1, 2]
        assert chunked.connections == 1
    finally:
        chunked.close()
        until_eof.close()


def test_failures_raise_the_httpx_errors_the_sdk_retries():
    free = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{free.getsockname()[1]}/"
    free.close()
    with httpx.Client(transport=LeanTransport()) as client:
        try:
            client.get(url)
        except httpx.ConnectError as exc:
            assert _should_retry_api_request(exc)
        else:
            raise AssertionError("no ConnectError")
    silent = OneShotServer(b"", per_conn=1)  # reads the request, closes without answering
    try:
        with httpx.Client(transport=LeanTransport()) as client:
            try:
                client.get(silent.url)
            except httpx.RemoteProtocolError as exc:
                assert _should_retry_api_request(exc)
            else:
                raise AssertionError("no RemoteProtocolError")
    finally:
        silent.close()


def test_cookies_are_read_only_from_responses_that_set_them():
    setting = OneShotServer(b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\ncontent-length: 0\r\n\r\n",
                            per_conn=1)
    try:
        with httpx.Client(transport=LeanTransport()) as client:
            client._cookies = ResponseCookies()
            client.get(setting.url)
            assert client.cookies.get("a") == "1"
    finally:
        setting.close()


# --- LeanClient: the requests the SDK's client would send, its errors and retries --------

class CaptureServer:
    """A loopback keep-alive server recording each request (line, headers, body) and
    answering from ``replies`` in turn (the last one repeated)."""

    def __init__(self, *replies: bytes):
        self.replies = list(replies)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.requests: list[tuple[bytes, dict[str, str], bytes]] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                buf = b""
                while True:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            break
                        buf += data
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    if not head:
                        break
                    line, *lines = head.decode("latin-1").split("\r\n")
                    headers = {}
                    for each in lines:
                        name, _, value = each.partition(":")
                        assert name.lower() not in headers, f"{name} sent twice"
                        headers[name.lower()] = value.strip()
                    length = int(headers.get("content-length", 0))
                    while len(buf) < length:
                        buf += conn.recv(65536)
                    body, buf = buf[:length], buf[length:]
                    self.requests.append((line.encode(), headers, body))
                    reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
                    conn.sendall(reply)

    def close(self):
        self.sock.close()


def json_reply(status: str, body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


OK = json_reply("200 OK", b'{"ok":true}')
CALLS = [  # as the SDK's operations call the client
    ("patch", "task-instances/0b32d740-6823-4cb1-b54c-a838cdad362e/run",
     {"content": '{"pid":1,"hostname":"h","unixname":"u","start_date":"2026-01-01T00:00:00Z"}'}),
    ("get", "xcoms/dag/manual__2026-01-01T00:00:00+00:00/t/return_value",
     {"params": {"map_index": 3, "include_prior_dates": False}}),
    ("post", "xcoms/dag/manual__2026-01-01T00:00:00+00:00/t/return_value",
     {"params": {"map_index": 3, "mapped_length": 5}, "json": {"a": [1, "é", None]}}),
    ("post", "xcoms/dag/run/t/return_value", {"params": {}, "json": None}),
    ("put", "task-instances/0b32d740-6823-4cb1-b54c-a838cdad362e/rtif",
     {"json": {"op_kwargs": "{'x': 5}"}}),
    ("head", "xcoms/dag/run/t/return_value", {"params": {}}),
    ("get", "task-instances/states", {"params": {"dag_id": "d", "task_ids": ["a", "b"]}}),
    ("get", "variables/a key%2F with spaces", {}),  # not plain: httpx's path
    ("get", "xcoms/dag/run/t/k", {"params": {"x": "needs quoting&"}}),  # not plain either
    ("delete", "xcoms/dag/run/t/k", {"params": {"map_index": -1}}),
    ("patch", "task-instances/0b32d740-6823-4cb1-b54c-a838cdad362e/state",
     {"content": b'{"state":"success"}', "headers": {"content-type": "application/json"}}),
]


def sent(capture: CaptureServer) -> list[tuple]:
    """What crossed, but for each request's own correlation id (present, a UUID)."""
    seen = []
    for line, headers, body in capture.requests:
        assert len(headers.pop("correlation-id")) == 36
        seen.append((line, headers, body))
    return seen


def test_the_lean_client_sends_what_the_sdks_client_sends():
    from worker.sdk_transport import LeanClient

    sdk_server, lean_server = CaptureServer(OK), CaptureServer(OK)
    try:
        sdk = Client(base_url=sdk_server.url, token="tok", transport=LeanTransport())
        lean = LeanClient(base_url=lean_server.url, token="tok", transport=LeanTransport())
        for method, url, kwargs in CALLS:
            answers = [getattr(client, method)(url, **kwargs) for client in (sdk, lean)]
            body = b"" if method == "head" else b'{"ok":true}'
            assert [(a.status_code, a.content) for a in answers] == [(200, body)] * 2
        port = lambda s: s.url.rsplit(":", 1)[1].rstrip("/")  # noqa: E731
        expected = [(line, {**h, "host": h["host"].replace(port(sdk_server), port(lean_server))},
                     body) for line, h, body in sent(sdk_server)]
        assert sent(lean_server) == expected
        assert expected[2][2] == '{"a":[1,"é",null]}'.encode()
        assert expected[6][0] == b"GET /task-instances/states?dag_id=d&task_ids=a&task_ids=b HTTP/1.1"
    finally:
        sdk_server.close()
        lean_server.close()


def test_the_lean_client_fails_and_retries_as_the_sdks_client(monkeypatch):
    import tenacity
    from airflow.sdk.api.client import API_RETRIES, ServerResponseError

    from worker.sdk_transport import LeanClient

    monkeypatch.setattr(Client.request.retry, "wait", tenacity.wait_none())
    missing = json_reply("404 Not Found", b'{"detail":{"reason":"not_found","message":"gone"}}')
    busy = json_reply("503 Service Unavailable", b'{"detail":{"reason":"database_unavailable"}}')
    refreshed = json_reply("200 OK", b"{}", "Refreshed-API-Token: fresh\r\n")
    outcomes = {}
    for name in ("sdk", "lean"):
        capture = CaptureServer(missing, busy, busy, refreshed, OK, busy)
        try:
            make = Client if name == "sdk" else LeanClient
            client = make(base_url=capture.url, token="tok", transport=LeanTransport())
            try:
                client.get("xcoms/d/r/t/k")
            except ServerResponseError as exc:
                notes = [n.split("=")[0] for n in exc.__notes__]
                first = (exc.response.status_code, exc.detail, notes, exc.request.url.raw_path)
            assert client.get("xcoms/d/r/t/k").status_code == 200  # after two 503s
            client.get("xcoms/d/r/t/k")  # with the refreshed token
            try:
                client.get("xcoms/d/r/t/k")
            except ServerResponseError as exc:
                last = exc.response.status_code
            tokens = [h["authorization"] for _, h, _ in capture.requests]
            outcomes[name] = (first, last, len(capture.requests), tokens)
        finally:
            capture.close()
    assert outcomes["lean"] == outcomes["sdk"]
    first, last, count, tokens = outcomes["lean"]
    assert first[:2] == (404, {"reason": "not_found", "message": "gone"})
    assert (last, count) == (503, 5 + API_RETRIES)
    assert tokens[:4] == ["Bearer tok"] * 4 and set(tokens[4:]) == {"Bearer fresh"}


def test_an_answer_the_sdk_cannot_read_names_the_request_as_with_the_sdks_client():
    from worker.sdk_transport import LeanClient

    no_range = b"HTTP/1.1 200 OK\r\ncontent-range: bytes 0-1/2\r\ncontent-length: 0\r\n\r\n"
    errors = {}
    for name, make in (("sdk", Client), ("lean", LeanClient)):
        capture = CaptureServer(no_range)
        try:
            client = make(base_url=capture.url, token="tok", transport=LeanTransport())
            try:
                client.xcoms.head("d", "r", "t", "k")
            except RuntimeError as exc:
                errors[name] = str(exc).replace(capture.url, "URL/")
        finally:
            capture.close()
    assert errors == {"sdk": "Unable to parse Content-Range header from HEAD URL/xcoms/d/r/t/k",
                      "lean": "Unable to parse Content-Range header from HEAD URL/xcoms/d/r/t/k"}
