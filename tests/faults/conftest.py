"""Fixtures of the fault-injection suite: servers owned by the test, so it may break them."""

from __future__ import annotations

import pytest

from tests.faults import OwnedPostgres, OwnedValkey, private_home


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "faults: full-size fault-injection runs (`make faults`; deselected by "
        "`make test`)")


@pytest.fixture
async def owned_postgres():
    with private_home("pg") as home:
        server = await OwnedPostgres.create(home / "pg")
        yield server
        await server.stop()


@pytest.fixture
async def owned_valkey():
    with private_home("valkey") as home:
        server = OwnedValkey(home / "valkey")
        await server.start()
        yield server
        await server.stop()
