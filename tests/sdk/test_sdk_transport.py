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
