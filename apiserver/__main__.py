"""``python -m apiserver``: the api-server as ``sluice standalone`` starts it.

Like the daemons it is drained (SIGTERM) when the supervising ``standalone`` dies,
so a SIGKILLed standalone leaves no api-server holding its port.
"""

from __future__ import annotations

import sys

import anyio

from apiserver.config import load_api_settings
from apiserver.server import serve
from shared.daemon import die_with_supervisor
from shared.logging import configure_logging


def main() -> int:
    configure_logging()
    die_with_supervisor()
    return anyio.run(serve, load_api_settings())


if __name__ == "__main__":
    sys.exit(main())
