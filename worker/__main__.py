"""``python -m worker``: build settings, configure logging, run the daemon.

The event loop is uvloop's when it is installed (Airflow's dependencies bring it):
the worker's loop serves every call its tasks make to the Execution API.
"""

from __future__ import annotations

import importlib.util

import anyio

from shared.config import keep_files_private, load_settings
from shared.daemon import protect_process
from shared.logging import configure_logging
from worker.daemon import run


def main() -> None:
    keep_files_private()  # as every sluice command: files it makes are private
    protect_process()  # as every sluice command: its credentials are its own
    configure_logging()
    anyio.run(run, load_settings(), backend_options={"use_uvloop": uvloop_installed()})


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


if __name__ == "__main__":
    main()
