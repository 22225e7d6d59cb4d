"""``python -m worker.execution_api``: the Execution API on its own (tests, remote tasks).

Binds ``SLUICE_API_HOST``/``SLUICE_API_PORT`` (0: any free port), prints
``{"port": N}`` on stdout once listening, and publishes wake-ups to Redis when
``SLUICE_REDIS_URL`` is set. The worker daemon serves the same app in its own loop.
"""

from __future__ import annotations

import json

import anyio

from shared import bus
from shared.config import load_settings
from shared.db import create_pool
from shared.logging import configure_logging
from shared.messages import TriggersPending
from worker.execution_api import ApiSettings, bind, create_app, serve


def _wake(redis, streams: bus.Streams):
    async def wake(messages) -> None:
        await bus.publish(redis, [(streams.triggers if isinstance(m, TriggersPending)
                                   else streams.events, m) for m in messages])
    return wake


async def main() -> None:
    settings, api_settings = load_settings(), ApiSettings()
    pool = await create_pool(settings.database_url)
    redis = bus.connect(settings.redis_url) if settings.redis_url else None
    wake = _wake(redis, bus.Streams(settings.stream_prefix)) if redis else None
    sock = bind(api_settings.api_host, api_settings.api_port)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    try:
        await serve(create_app(pool, api_settings, wake=wake), sock)
    finally:
        with anyio.CancelScope(shield=True):
            await pool.close()
            if redis is not None:
                await redis.aclose()


if __name__ == "__main__":
    configure_logging()
    anyio.run(main)
