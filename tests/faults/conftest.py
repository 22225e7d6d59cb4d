"""The fault-injection suite's marker; its servers are the `postgres` and `valkey` fixtures."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "faults: full-size fault-injection runs (`make faults`; deselected by "
        "`make test`)")
