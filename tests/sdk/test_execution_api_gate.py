"""The Execution API's gate renews a try's token only while that try still runs here.

A token kept by something a finished try left behind must die at its expiry, not be
renewed for as long as the worker lives.
"""

from __future__ import annotations

import time
import uuid

from worker.execution_api.gate import Gate
from worker.execution_api.tokens import mint

SECRET = b"s" * 32
TTL_S = 100.0


async def _call(gate: Gate, token: str) -> dict[bytes, bytes]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await gate({"type": "http", "path": "/task-instances/x/heartbeat",
                "headers": [(b"authorization", f"Bearer {token}".encode())]}, receive, send)
    return dict(sent[0]["headers"])


async def _ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def test_an_old_token_is_renewed_only_while_its_try_runs_here():
    running, ended = uuid.uuid4(), uuid.uuid4()
    gate = Gate(_ok, secret=SECRET, ttl_s=TTL_S, live=lambda ti: ti == running)
    past_half = time.time() - TTL_S * 0.6  # minted 60 s ago: 40 s left of 100
    assert b"refreshed-api-token" in await _call(gate, mint(running, SECRET, TTL_S, now=past_half))
    assert b"refreshed-api-token" not in await _call(gate, mint(ended, SECRET, TTL_S, now=past_half))
    fresh = mint(running, SECRET, TTL_S)
    assert b"refreshed-api-token" not in await _call(gate, fresh)  # not yet past half its life
