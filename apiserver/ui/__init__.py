"""The web UI: pages and live updates, mounted on the api-server's app.

The pages are static HTML, ES modules and CSS (``static/``, no build step)
that call the REST API for actions and the UI's own read endpoints
(``apiserver.ui.routes``) for views; ``/ui/events`` pushes what changed, so an
open grid refetches only the run that changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from apiserver.ui.events import EventHub
from apiserver.ui.routes import UiContext, build_router
from apiserver.ui.sql import q
from shared import bus

STATIC = Path(__file__).parent / "static"


def mount(app: Any, state: Any) -> None:
    """Add the UI's routes to ``app``; ``state`` is the api-server's shared state
    (``ApiState``: settings, authenticator, and the pool once the app started)."""

    async def resolve(run_pks: list[int]) -> list[dict]:
        async with state.pool.acquire() as conn:
            return [dict(r) for r in await conn.fetch(q("ui_runs_by_pk"), run_pks)]

    from apiserver.app import current_user  # the one rule for who is logged in

    hub = EventHub(state.settings.redis_url, bus.Streams(state.settings.stream_prefix).events,
                   resolve)
    ctx = UiContext(settings=state.settings, pool=lambda: state.pool, hub=hub,
                    authenticate=current_user)
    state.extra["ui_hub"] = hub
    app.include_router(build_router(ctx))
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    app.add_api_route("/ui/", _index, methods=["GET"], include_in_schema=False)
    for path in ("/ui", "/"):
        if not any(getattr(r, "path", None) == path for r in app.routes):
            app.add_api_route(path, _home, methods=["GET"], include_in_schema=False)


async def _index() -> FileResponse:
    """Every page is this one document; its script routes on the URL's fragment."""
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _home() -> RedirectResponse:
    return RedirectResponse("/ui/")
