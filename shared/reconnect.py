"""Reaching PostgreSQL and Redis from a command: through restarts, one line when unreachable.

A command's connects, reads and idempotent writes are retried with capped backoff until a
deadline: a few seconds (``CONNECT_BUDGET_S``) before it has done anything, so
a wrong or stopped service is said at once, and its own ``--timeout`` while it
waits on a run, so a server restart in the middle costs a pause, not the
command. Any other write runs once, on a connection checked just before: after a
dropped connection nobody knows whether it committed, and running it again
could create a second run. A service still unreachable at the deadline is
``ServiceUnavailable``: one line naming the service by its URL, password
hidden; the command exits 2 (DESIGN.md, "Command line").
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import anyio
import asyncpg
import redis.exceptions as redis_errors

from shared.db import DB_ERRORS, _init_connection, backoff_delays
from shared.logging import redact

T = TypeVar("T")

CONNECT_BUDGET_S = 5.0   # before a command has done anything
CONNECT_TIMEOUT_S = 5.0  # one connection attempt
QUERY_TIMEOUT_S = 30.0   # one statement: a server that hangs is retried like one that left

REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
# what, escaping a command, says the database went away (a bare OSError may be a file's)
_DB_LOST = tuple(e for e in DB_ERRORS if e is not OSError) + (ConnectionError, socket.gaierror)


class ServiceUnavailable(Exception):
    """``database at postgresql://sluice:***@db:5432/sluice is unreachable: <error>``."""

    def __init__(self, service: str, url: str, error: BaseException | str,
                 verb: str = "is unreachable") -> None:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        super().__init__(f"{service} at {redact(url)} {verb}: {text}")


def deadline_in(seconds: float) -> float:
    return time.monotonic() + seconds


def _past(deadline: float, delay: float) -> bool:
    return time.monotonic() + delay >= deadline


class Database:
    """One PostgreSQL connection for one command, made again when the server drops it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: asyncpg.Connection | None = None

    async def run(self, fn: Callable[..., Awaitable[T]], *args, deadline: float) -> T:
        """``fn(conn, *args)``, run again on a fresh connection until ``deadline``.

        ``fn`` must be safe to repeat (a read, an idempotent write such as a
        migration): it may have run, whole or in part, when it is retried.
        """
        for delay in backoff_delays():
            try:
                return await fn(await self._connection(), *args)
            except DB_ERRORS as exc:
                await self.close()
                if _past(deadline, delay):
                    raise ServiceUnavailable("database", self.url, exc) from None
            await anyio.sleep(delay)
        raise AssertionError("unreachable")

    async def run_once(self, fn: Callable[..., Awaitable[T]], *args, deadline: float) -> T:
        """``fn(conn, *args)`` once, on a connection that answered just before."""
        conn = await self.run(_alive, deadline=deadline)
        try:
            return await fn(conn, *args)
        except DB_ERRORS as exc:
            await self.close()
            raise ServiceUnavailable("database", self.url, exc,
                                     "was lost during a write, which may or may not have "
                                     "been applied") from None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            try:
                conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT_S,
                                             command_timeout=QUERY_TIMEOUT_S)
            except DB_ERRORS:
                raise
            except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
                # a login refused, a database that does not exist: no restart cures these
                raise ServiceUnavailable("database", self.url, exc,
                                         "refused the connection") from None
            await _init_connection(conn)
            self._conn = conn
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        with contextlib.suppress(*DB_ERRORS, asyncpg.PostgresError):
            await conn.close(timeout=2)
        if not conn.is_closed():
            conn.terminate()


async def _alive(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute("SELECT 1")
    return conn


async def redis_call(url: str, fn: Callable[..., Awaitable[T]], *args, deadline: float) -> T:
    """``fn(redis, *args)`` with a client of ``url``, retried until ``deadline``.

    Only for what may be repeated: a ping, a wake-up (a second one is harmless).
    """
    from shared import bus

    client = bus.connect(url)
    try:
        for delay in backoff_delays():
            try:
                return await fn(client, *args)
            except redis_errors.AuthenticationError as exc:
                raise ServiceUnavailable("redis", url, exc, "refused the login") from None
            except REDIS_ERRORS as exc:
                if _past(deadline, delay):
                    raise ServiceUnavailable("redis", url, exc) from None
            await anyio.sleep(delay)
        raise AssertionError("unreachable")
    finally:
        with contextlib.suppress(*REDIS_ERRORS):
            await client.aclose()


async def ping(client) -> None:
    await client.ping()


def _leaves(exc: BaseException) -> Iterable[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def one_line(exc: BaseException, db_url: str | None, redis_url: str | None) -> str | None:
    """What to tell the user, in one line, of a failure to reach a service; None for others.

    For errors that escape a command or a daemon (inside a task group's
    exception group, too): the retried paths raise ``ServiceUnavailable``
    themselves.
    """
    for leaf in _leaves(exc):
        if isinstance(leaf, ServiceUnavailable):
            return str(leaf)
        if isinstance(leaf, asyncpg.UndefinedTableError) and db_url:
            return (f"database at {redact(db_url)} has no Sluice schema "
                    f"({leaf}): run `sluice db migrate`")
        if isinstance(leaf, redis_errors.RedisError) and redis_url:
            return str(ServiceUnavailable("redis", redis_url, leaf))
        if isinstance(leaf, _DB_LOST) and db_url:
            return str(ServiceUnavailable("database", db_url, leaf))
    return None
