"""Migrations applied in order to an empty database produce exactly schema.sql."""

from __future__ import annotations

import uuid
from importlib import resources

import asyncpg

from shared.db import migrate, migration_files

CATALOG = """
SELECT table_name, column_name, data_type, is_nullable, column_default
  FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'schema_migration'
 ORDER BY table_name, column_name
"""
INDEXES = """
SELECT tablename, indexname, indexdef FROM pg_indexes
 WHERE schemaname = 'public' AND tablename <> 'schema_migration' ORDER BY indexname
"""
CONSTRAINTS = """
SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def
  FROM pg_constraint WHERE connamespace = 'public'::regnamespace
   AND conrelid::regclass::text <> 'schema_migration' ORDER BY conname
"""


async def _fresh(admin_url: str) -> tuple[str, str]:
    name = f"sluice_m_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return name, admin_url.rpartition("/")[0] + "/" + name


async def _drop(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def _describe(url: str) -> tuple:
    conn = await asyncpg.connect(url)
    try:
        return tuple([tuple(map(tuple, await conn.fetch(sql))) for sql in (CATALOG, INDEXES, CONSTRAINTS)])
    finally:
        await conn.close()


async def test_migrations_produce_schema_sql(services):
    admin_url, _ = services
    (a, url_a), (b, url_b) = await _fresh(admin_url), await _fresh(admin_url)
    try:
        conn = await asyncpg.connect(url_a)
        applied = await migrate(conn)
        again = await migrate(conn)
        await conn.close()
        assert applied and again == []
        conn = await asyncpg.connect(url_b)
        await conn.execute(resources.files("shared.db").joinpath("schema.sql").read_text())
        await conn.close()
        assert await _describe(url_a) == await _describe(url_b)
    finally:
        await _drop(admin_url, a)
        await _drop(admin_url, b)


async def test_concurrent_migrate_is_safe(services):
    import anyio

    admin_url, _ = services
    name, url = await _fresh(admin_url)
    results = []
    try:
        async def one():
            conn = await asyncpg.connect(url)
            results.append(await migrate(conn))
            await conn.close()

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(one)
        assert sorted(len(r) for r in results) == [0, 0, len(migration_files())]
    finally:
        await _drop(admin_url, name)


INSERT_RUN = ("INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state)"
              " VALUES ($1, $2, 'scheduled', $3, 'success')")


async def test_run_ids_become_unique_per_dag_on_an_existing_database(services, monkeypatch):
    """A database migrated before runs were identified per DAG keeps its runs, then lets
    two DAGs on one schedule have the same run id, and still refuses it twice in one DAG."""
    from datetime import UTC, datetime

    import pytest

    import shared.db

    admin_url, _ = services
    name, url = await _fresh(admin_url)
    every = migration_files()
    before = [m for m in every if m[0] < "0006_run_id_per_dag"]
    day = datetime(2026, 1, 1, tzinfo=UTC)
    run_id = f"scheduled__{day.isoformat()}"
    try:
        conn = await asyncpg.connect(url)
        monkeypatch.setattr(shared.db, "migration_files", lambda: before)
        await migrate(conn)
        await conn.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized)"
                           " VALUES ('a', 'a.py', '', '{}'), ('b', 'b.py', '', '{}')")
        await conn.execute(INSERT_RUN, "a", run_id, day)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(INSERT_RUN, "b", run_id, day)
        monkeypatch.setattr(shared.db, "migration_files", lambda: every)
        assert "0006_run_id_per_dag" in await migrate(conn)
        await conn.execute(INSERT_RUN, "b", run_id, day)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(INSERT_RUN, "a", run_id, datetime(2026, 1, 2, tzinfo=UTC))
        rows = await conn.fetch("SELECT dag_id, run_id FROM dag_run ORDER BY dag_id")
        assert [tuple(r) for r in rows] == [("a", run_id), ("b", run_id)]
        await conn.close()
    finally:
        await _drop(admin_url, name)
