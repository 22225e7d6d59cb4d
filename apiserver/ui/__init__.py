"""The web UI: pages and live updates, mounted on the api-server's app."""

from __future__ import annotations

from typing import Any


def mount(app: Any, state: Any) -> None:
    """Add the UI's routes to ``app``; ``state`` is the api-server's shared state.

    The UI's pages are added here as they are built; until then the api-server
    serves its REST API alone.
    """
