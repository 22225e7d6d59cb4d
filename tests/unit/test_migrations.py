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
