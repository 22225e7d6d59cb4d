"""``sluice api-server`` as a real process for tests, and plain HTTP calls to it."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import anyio

from apiserver.auth import set_password
from tests.cluster import Cluster, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, method: str = "GET", body: dict | None = None, token: str | None = None,
         headers: dict | None = None, raw: bytes | None = None) -> tuple[int, object]:
    """One HTTP request: its status and JSON answer (errors too); status 0 when refused."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=sent, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except OSError:
        return 0, None


async def start_api_server(cluster: Cluster, users: dict[str, tuple[str, str]]) -> str:
    """``python -m apiserver`` (what ``sluice api-server`` and standalone run) on a free port,
    with ``users`` (name: (role, password)); its base URL once it answers."""
    home = cluster.root / "home"
    for name, (_, password) in users.items():
        set_password(home, name, password)
    port = free_port()
    cluster.start("apiserver", SLUICE_API_PORT=str(port),
                  SLUICE_API_USERS=",".join(f"{n}:{r}" for n, (r, _) in users.items()))
    base = f"http://127.0.0.1:{port}"

    async def up():
        status, _ = await anyio.to_thread.run_sync(call, f"{base}/api/v2/version")
        return status == 200

    await wait_for(up, 90, "the api-server to answer")
    return base


def login(base: str, name: str, password: str) -> str:
    status, body = call(f"{base}/auth/token", "POST", {"username": name, "password": password})
    assert status == 201, body
    return body["access_token"]
