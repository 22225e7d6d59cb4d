"""The UI's named SQL blocks (``queries.sql`` beside this module), loaded once."""

from __future__ import annotations

from shared.db import named_blocks


def q(name: str) -> str:
    return named_blocks("apiserver.ui")[name]
