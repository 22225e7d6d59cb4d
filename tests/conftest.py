"""Real PostgreSQL and Redis for every test: a fresh database and stream prefix each.

Servers come from SLUICE_TEST_DATABASE_URL / SLUICE_TEST_REDIS_URL, else the
default local ports when reachable, else embedded ones started here
(tests/services.py). Each test's database is a copy of a migrated template
(``CREATE DATABASE ... TEMPLATE``), so it starts from the real schema in
milliseconds.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import asyncpg
import pytest

from shared.db import _init_connection, migrate_url
from tests.cluster import Cluster
from tests.faults import OwnedPostgres, OwnedValkey, private_home
from tests.services import resolve_services

# Airflow reads its configuration when first imported: its home is a private temporary folder,
# never ~/airflow, set before any test module imports airflow.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="sluice-airflow-home-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# Tests trigger the DAGs they write: new DAGs start unpaused (tests of pausing set it back).
os.environ.setdefault("SLUICE_DAGS_ARE_PAUSED_AT_CREATION", "false")


def _with_db(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    admin_url, redis_url, cleanup = resolve_services(tmp_path_factory.mktemp("services"))
    yield admin_url, redis_url
    cleanup()


@pytest.fixture(scope="session")
async def template_db(services):
    admin_url, _ = services
    name = f"sluice_tpl_{os.getpid()}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    await migrate_url(_with_db(admin_url, name))
    yield name
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def db_url(services, template_db):
    admin_url, _ = services
    name = f"sluice_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await conn.close()
    yield _with_db(admin_url, name)
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def db(db_url):
    conn = await asyncpg.connect(db_url)
    await _init_connection(conn)
    yield conn
    await conn.close()


@pytest.fixture
def redis_url(services):
    return services[1]


@pytest.fixture
def stream_prefix():
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def dags_folder(tmp_path) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    return folder


@pytest.fixture
def cluster(tmp_path, db_url, redis_url, stream_prefix, dags_folder):
    c = Cluster(tmp_path, db_url=db_url, redis_url=redis_url, prefix=stream_prefix,
                dags_folder=dags_folder)
    yield c
    c.stop_all()


@pytest.fixture
async def postgres():
    """A PostgreSQL of the test's own, which it may stop, restart or break."""
    with private_home("pg") as home:
        server = await OwnedPostgres.create(home / "pg")
        yield server
        await server.stop()


@pytest.fixture
async def valkey():
    """A Valkey of the test's own, which it may flush, restart or stop."""
    with private_home("valkey") as home:
        server = OwnedValkey(home / "valkey")
        await server.start()
        yield server
        await server.stop()
