"""TLS settings in the URLs reach the drivers untouched: ``sslmode=`` for PostgreSQL, ``rediss://``.

This machine's servers speak no TLS, so what proves the pass-through is the
drivers acting on it: asyncpg insisting on TLS (and the server refusing it),
redis-py building TLS connections.
"""

from __future__ import annotations

import asyncpg
import pytest
from redis.asyncio.connection import SSLConnection

from shared import bus
from shared.config import load_settings
from shared.db import create_pool


def _with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


async def test_sslmode_reaches_asyncpg(db_url, monkeypatch):
    async def server_has_tls() -> bool:
        conn = await asyncpg.connect(db_url)
        try:
            return await conn.fetchval("SHOW ssl") == "on"
        finally:
            await conn.close()

    monkeypatch.setenv("SLUICE_DATABASE_URL", _with_query(db_url, "sslmode=require"))
    url = load_settings().database_url
    assert url.endswith("sslmode=require")
    if await server_has_tls():
        pool = await create_pool(url, attempts=1)
        try:
            assert await pool.fetchval(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
        finally:
            await pool.close()
    else:
        with pytest.raises(ConnectionError, match="rejected SSL upgrade"):
            await create_pool(url, attempts=1)
    pool = await create_pool(_with_query(db_url, "sslmode=disable"), attempts=1)
    await pool.close()


def test_rediss_url_makes_tls_connections(monkeypatch):
    monkeypatch.setenv("SLUICE_REDIS_URL", "rediss://:secret@redis.example.internal:6380/2"
                                           "?ssl_cert_reqs=required")
    client = bus.connect(load_settings().redis_url)
    pool = client.connection_pool
    assert pool.connection_class is SSLConnection
    assert (pool.connection_kwargs["host"], pool.connection_kwargs["port"],
            pool.connection_kwargs["db"]) == ("redis.example.internal", 6380, 2)
