"""The api-server's SQL: ``queries.sql`` beside this file, as ``-- name: NAME`` blocks.

The same form as ``shared/db/queries.sql``: statements are static (filters that
are not given are ``NULL`` parameters that match everything), never composed
from strings.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources


@cache
def _queries() -> dict[str, str]:
    text = resources.files("apiserver").joinpath("queries.sql").read_text()
    blocks = re.split(r"^-- name: (\w+)\s*$", text, flags=re.M)
    return {name: body.strip() for name, body in zip(blocks[1::2], blocks[2::2], strict=True)}


def q(name: str) -> str:
    return _queries()[name]
