"""The UI's named SQL blocks (``queries.sql`` beside this module), loaded once."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources


@cache
def _blocks() -> dict[str, str]:
    text = resources.files("apiserver.ui").joinpath("queries.sql").read_text()
    parts = re.split(r"^-- name: (\w+)\s*$", text, flags=re.M)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def q(name: str) -> str:
    return _blocks()[name]
