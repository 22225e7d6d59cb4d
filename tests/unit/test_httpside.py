"""A daemon's HTTP side sheds a flood of connections instead of dying of it."""

from __future__ import annotations

import anyio

from shared import httpside


async def _get(port: int) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        with anyio.fail_after(5):
            try:
                while True:
                    data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return data


async def test_connections_past_the_cap_are_closed_and_the_server_goes_on(monkeypatch):
    monkeypatch.setattr(httpside, "MAX_CONNECTIONS", 2)

    async def health(_request):
        return httpside.text(200, "ok")

    listener = await httpside.listen("127.0.0.1", 0, setting="TEST_PORT", explicit=False)
    port = httpside.bound_port(listener)
    async with anyio.create_task_group() as tg:
        tg.start_soon(httpside.serve, listener, {"/health": health})
        idle = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(2)]
        with anyio.fail_after(5):
            while True:  # the server holds both idle ones: the next is closed unanswered
                if await _get(port) == b"":
                    break
                await anyio.sleep(0.05)
        for stream in idle:
            await stream.aclose()
        with anyio.fail_after(5):
            while (reply := await _get(port)) == b"":
                await anyio.sleep(0.05)
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"ok\n")
        tg.cancel_scope.cancel()
