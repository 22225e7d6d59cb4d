"""``python -m apiserver``: the api-server as ``sluice standalone`` starts it."""

from __future__ import annotations

import sys

import anyio

from apiserver.config import load_api_settings
from apiserver.server import serve
from shared.logging import configure_logging


def main() -> int:
    configure_logging()
    return anyio.run(serve, load_api_settings())


if __name__ == "__main__":
    sys.exit(main())
