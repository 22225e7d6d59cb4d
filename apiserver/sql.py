"""The api-server's SQL: ``queries.sql`` beside this file, as ``-- name: NAME`` blocks.

The same form as ``shared/db/queries.sql``: statements are static (filters that
are not given are ``NULL`` parameters that match everything), never composed
from strings.
"""

from __future__ import annotations

from shared.db import named_blocks


def q(name: str) -> str:
    return named_blocks("apiserver")[name]
