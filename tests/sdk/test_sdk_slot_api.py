"""The Execution API the slots call, served in the worker's event loop, ends cleanly.

A daemon's task group is cancelled at shutdown (or a test's scope ends), so the
server is often cancelled rather than told to exit. Its listener must leave the
event loop then: a later socket that gets the same descriptor number (the next
worker in one process, the next test) must be served, not silently ignored.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from pydantic import SecretStr

from shared.db import create_pool
from worker.execution_api import ApiSettings, bind, create_app, serve

pytestmark = pytest.mark.timeout(60)


async def ping(port: int) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.get(f"http://127.0.0.1:{port}/health/ping")).status_code


async def serve_until_pinged_then_cancel(app, sock) -> None:
    """Serve ``app`` on ``sock``, answer a ping, then cancel the server mid-serve."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve, app, sock)
        with anyio.fail_after(20):
            while True:
                try:
                    assert await ping(sock.getsockname()[1]) == 200
                    break
                except httpx.TransportError:
                    await anyio.sleep(0.05)
        tg.cancel_scope.cancel()


async def test_a_cancelled_server_leaves_no_listener_behind(db_url, tmp_path: Path):
    settings = ApiSettings(home=tmp_path, worker_id="w", api_token_secret=SecretStr("s" * 32))
    pool = await create_pool(db_url)
    try:
        app = create_app(pool, settings)
        first = bind("127.0.0.1", 0)
        number = first.fileno()
        await serve_until_pinged_then_cancel(app, first)
        first.close()
        second = bind("127.0.0.1", 0)
        assert second.fileno() == number  # the case: the loop knew this number as a listener
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve, app, second)
                with anyio.fail_after(10):
                    assert await ping(second.getsockname()[1]) == 200
                tg.cancel_scope.cancel()
        finally:
            second.close()
    finally:
        await pool.close()
