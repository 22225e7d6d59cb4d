"""Fixtures of the fault-injection suite: servers owned by the test, so it may break them."""

from __future__ import annotations

import pytest

from tests.faults import OwnedPostgres, OwnedValkey


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "faults: full-size fault-injection runs (`make faults`; deselected by "
        "`make test`)")


@pytest.fixture
async def owned_postgres(tmp_path):
    server = await OwnedPostgres.create(tmp_path / "pg")
    yield server
    await server.stop()


@pytest.fixture
async def owned_valkey(tmp_path):
    server = OwnedValkey(tmp_path / "valkey")
    await server.start()
    yield server
    await server.stop()
