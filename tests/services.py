"""Which PostgreSQL and Redis the test suite talks to.

For each of the two, in order:

1. the URL in ``SLUICE_TEST_DATABASE_URL`` / ``SLUICE_TEST_REDIS_URL``, used as given;
2. the server on its default local port, if it answers (PostgreSQL: a login as
   ``root`` whose role may create databases; Redis: ``PING``);
3. an embedded server started by :func:`shared.embedded.start_embedded`, stopped
   by the returned cleanup. Its URL holds the password the server was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

DATABASE_URL_ENV = "SLUICE_TEST_DATABASE_URL"
REDIS_URL_ENV = "SLUICE_TEST_REDIS_URL"
LOCAL_DATABASE_URL = "postgresql://root@127.0.0.1:5432/postgres"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"

PROBE_TIMEOUT_S = 3.0


def resolve_services(tmp_root: Path | None = None) -> tuple[str, str, Callable[[], None]]:
    """Return ``(postgres admin URL, redis URL, cleanup)``.

    The postgres URL names a database and a role that may run CREATE DATABASE.
    ``cleanup`` stops whatever embedded server was started here and removes its
    data (else does nothing); call it once the tests are done. ``tmp_root`` is
    not used any more: embedded data live outside pytest's tree (see below).
    """
    database_url = os.environ.get(DATABASE_URL_ENV) or (
        LOCAL_DATABASE_URL if postgres_usable(LOCAL_DATABASE_URL) else None
    )
    redis_url = os.environ.get(REDIS_URL_ENV) or (
        LOCAL_REDIS_URL if redis_usable(LOCAL_REDIS_URL) else None
    )
    if database_url is not None and redis_url is not None:
        return database_url, redis_url, _nothing

    from shared.embedded import start_embedded
    from tests.faults import private_home

    # Not under tmp_root: pytest resets its base folder to 0700 whenever a session
    # starts, and PostgreSQL, run by root as its own account, must reach its data.
    home = contextlib.ExitStack()
    with contextlib.ExitStack() as on_error:
        on_error.callback(home.close)
        services = start_embedded(
            home.enter_context(private_home("services")) / "embedded-services",
            postgres=database_url is None,
            redis=redis_url is None,
        )
        on_error.pop_all()
    home.callback(services.stop)  # runs first
    if database_url is None:
        # the maintenance database (the caller creates its own databases), with the password
        database_url = urlsplit(services.database_url)._replace(path="/postgres").geturl()
    if redis_url is None:
        redis_url = services.redis_url
    return database_url, redis_url, home.close


def _nothing() -> None:
    pass


def _port_open(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), timeout=0.5
        ):
            return True
    except OSError:
        return False


def postgres_usable(url: str) -> bool:
    """True if ``url`` accepts a login whose role may create databases."""
    if not _port_open(url, 5432):
        return False

    async def probe() -> bool:
        import asyncpg

        conn = await asyncpg.connect(url, timeout=PROBE_TIMEOUT_S)
        try:
            return bool(
                await conn.fetchval(
                    "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
                )
            )
        finally:
            await conn.close()

    # On a thread of its own: the caller may be inside a running event loop,
    # and asyncio.run() would reset this thread's current loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            return pool.submit(lambda: asyncio.run(probe())).result(timeout=2 * PROBE_TIMEOUT_S)
        except Exception:
            return False


def redis_usable(url: str) -> bool:
    """True if ``url`` answers PING."""
    if not _port_open(url, 6379):
        return False
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
