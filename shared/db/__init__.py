"""PostgreSQL access: pool creation, named SQL blocks, migrations.

SQL lives in ``queries.sql`` as ``-- name: NAME`` blocks, loaded once. The
functions that run them are thin. ``json`` columns are decoded with the
standard library so object key order survives the round trip.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import cache
from importlib import resources
from typing import TypeVar

import anyio
import asyncpg
import structlog

log = structlog.get_logger()
T = TypeVar("T")

MIGRATION_LOCK_ID = 0x51_1CE  # advisory lock serialising concurrent `db migrate`

# What a lost, restarting or overloaded server raises: worth a retry, never a crash.
# 57P01-57P03 (admin/crash shutdown, "the database system is starting up") come
# while PostgreSQL restarts; 53300 when it refuses more connections. asyncpg's
# InternalClientError ("cannot switch to state ...") comes from resetting a
# connection the server dropped mid-query: the pool discards that connection.
DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)

# What concurrent writers (two schedulers, a scheduler and a worker) can meet: the
# transaction is rolled back whole and is worth running again.
TRANSIENT_SQL: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)


def backoff_delays(first_s: float = 0.1, cap_s: float = 5.0):
    """Capped exponential delays with full jitter: 0.1, 0.2, 0.4 ... up to ``cap_s``."""
    delay = first_s
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(delay * 2, cap_s)


class Continuity:
    """How long this process has reached the database without a break.

    Heartbeats stop for everyone while PostgreSQL is down, so a peer's stale
    heartbeat proves nothing until this process itself has been connected for
    longer than the heartbeat timeout: judge others only after that.
    """

    def __init__(self) -> None:
        self._since: float | None = time.monotonic()

    def broke(self) -> None:
        self._since = None

    def held(self) -> None:
        if self._since is None:
            self._since = time.monotonic()

    def longer_than(self, seconds: float) -> bool:
        return self._since is not None and time.monotonic() - self._since >= seconds


async def persist(write: Callable[[], Awaitable[T]], *, what: str) -> T:
    """Run a terminal write until the database takes it.

    Each attempt is shielded, so a cancellation never tears a transaction in
    half; the waits between attempts are not, so a forced stop still stops.
    What was not written stays owed in the database's own terms (a running
    instance, a claimed trigger) and the repair paths take it over.
    """
    for delay in backoff_delays():
        try:
            with anyio.CancelScope(shield=True):
                return await write()
        except DB_ERRORS as exc:
            log.warning("database_write_retrying", what=what, error=str(exc),
                        retry_in_s=round(delay, 2))
        await anyio.sleep(delay)
    raise AssertionError("unreachable")


@asynccontextmanager
async def rederivable_transaction(conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """A transaction whose commit does not wait for its WAL flush.

    For writes that are decisions, not facts: a scheduling pass derives them
    from the database again, so losing the last few (at most three
    ``wal_writer_delay``, 600 ms by default) in a PostgreSQL crash loses
    nothing. The next pass or repair sweep decides them again, and a stale
    queue message meets the claim's guard. No other process can act durably on
    a lost decision, because its own durable commit flushes the WAL up to and
    past it. Saves a disk flush on the path between two tasks. ``BEGIN`` and
    the setting go in one round trip.
    """
    try:
        await conn.execute("BEGIN; SET LOCAL synchronous_commit = off")
        yield conn
    except BaseException:
        with anyio.CancelScope(shield=True):
            try:
                await conn.execute("ROLLBACK")
            except DB_ERRORS + (asyncpg.PostgresError,):
                conn.terminate()  # the pool replaces it
        raise
    with anyio.CancelScope(shield=True):  # a pass is committed whole or not at all, never "maybe"
        await conn.execute("COMMIT")


@cache
def named_blocks(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """Every ``-- name: NAME`` block of a package's SQL file, loaded once.

    The one reader of Sluice's SQL files (``shared.db``'s and the api-server's):
    statements are static text, never composed from strings.
    """
    text = resources.files(package).joinpath(filename).read_text()
    blocks = re.split(r"^-- name: (\w+)\s*$", text, flags=re.M)
    return {name: body.strip() for name, body in zip(blocks[1::2], blocks[2::2], strict=True)}


def queries() -> dict[str, str]:
    """Every named SQL block of ``queries.sql``."""
    return named_blocks("shared.db")


def q(name: str) -> str:
    return queries()[name]


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Return a connection to its pool as it is, without asyncpg's reset query.

    The default reset (``RESET ALL``, ``UNLISTEN *``, advisory unlocks, ``CLOSE
    ALL``) costs a round trip on every release, on the path between a commit and
    the wake-up sent after it. The daemons keep no session state on pooled
    connections (no ``SET``, ``LISTEN``, cursors or advisory locks), and an open
    transaction is still rolled back by the pool before this runs.
    """


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10,
                      attempts: int | None = None) -> asyncpg.Pool:
    """A pool, retried with capped exponential backoff until the server answers.

    Its sessions run without PostgreSQL's JIT compilation: every statement of Sluice's
    is short, and a plan the estimator thinks large (a scheduling pass over a run of
    100,000 instances, say) would spend a second compiling what runs in a millisecond.
    """
    for attempt, delay in enumerate(backoff_delays(), start=1):
        try:
            return await asyncpg.create_pool(
                url, min_size=min_size, max_size=max_size, init=_init_connection,
                reset=_keep_session, command_timeout=60, server_settings={"jit": "off"},
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if attempts is not None and attempt >= attempts:
                raise
            log.warning("database_unavailable", url=url, error=str(exc),  # url: redacted by logging
                        retry_in_s=round(delay, 2))
            await anyio.sleep(delay)
    raise AssertionError("unreachable")


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("shared.db").joinpath("migrations")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), folder.joinpath(name).read_text()) for name in names]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations in order; safe to run concurrently and repeatedly."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migration ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migration")}
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migration (version) VALUES ($1)", version)
            applied.append(version)
            log.info("migration_applied", version=version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied


async def migrate_url(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
