"""The fault-injection suite's marker and its bus server.

Its PostgreSQL is the `postgres` fixture; its Redis is `strict_redis`: Redis's own
server when installed (see ``OwnedValkey.strictest``), else Valkey.
"""

from __future__ import annotations

import pytest

from tests.faults import strictest_redis


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "faults: full-size fault-injection runs (`make faults`; deselected by "
        "`make test`)")


@pytest.fixture
async def strict_redis():
    """A Redis of the test's own, which it may flush, restart or stop."""
    async with strictest_redis() as server:
        yield server
