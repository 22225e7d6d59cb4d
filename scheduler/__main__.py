"""``python -m scheduler``: build settings, configure logging, run the daemon."""

from __future__ import annotations

import anyio

from scheduler.daemon import run
from shared.config import keep_files_private, load_settings
from shared.logging import configure_logging


def main() -> None:
    keep_files_private()  # as every sluice command: files it makes are private
    configure_logging()
    anyio.run(run, load_settings())


if __name__ == "__main__":
    main()
