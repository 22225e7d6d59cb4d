"""Running the api-server: settings, users, then uvicorn on the app until a stop signal."""

from __future__ import annotations

import sys

import structlog

from apiserver.config import ApiSettings

log = structlog.get_logger()


def print_new_passwords(new: dict[str, str], roles: dict[str, str]) -> None:
    """Say each generated password once, on the terminal (as Airflow's standalone does);
    only its hash is kept."""
    for name, password in sorted(new.items()):
        print(f"api-server: login {name!r} ({roles[name]}) with password: {password}",
              file=sys.stderr, flush=True)


async def serve(settings: ApiSettings) -> int:
    """Serve the REST API and UI on ``api_host:api_port`` until SIGINT/SIGTERM."""
    import uvicorn

    from apiserver.app import create_app, make_state

    settings.require_urls()
    state, new = make_state(settings)
    print_new_passwords(new, state.users)
    app = create_app(settings, state)
    config = uvicorn.Config(app, host=settings.api_host, port=settings.api_port,
                            log_config=None, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5)  # open live pages (SSE) end then
    server = uvicorn.Server(config)
    await server.serve()
    return 0 if server.started else 2
