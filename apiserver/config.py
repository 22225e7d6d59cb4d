"""The api-server's settings: Sluice's own, plus where to listen and who may log in.

``SLUICE_API_USERS`` names the users and their roles (``alice:admin,bob:viewer``);
their password hashes live in ``$SLUICE_HOME/api_users.json`` (``apiserver.auth``).
``SLUICE_API_SECRET_KEY`` signs the login tokens; without it the key is
``$SLUICE_HOME/api_secret.key``, created on first start (mode 0600), so every
api-server sharing the home accepts the tokens of the others.
"""

from __future__ import annotations

from pydantic import Field

from shared.config import Settings


class ApiSettings(Settings):
    """``Settings`` with the api-server's knobs (prefix ``SLUICE_API_``)."""

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    api_users: str = "admin:admin"
    api_secret_key: str | None = None
    api_token_ttl_s: float = Field(default=24 * 3600.0, gt=0)


def load_api_settings(**overrides: object) -> ApiSettings:
    """Settings from the environment, CLI flags on top, URLs from ``standalone.json``."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return ApiSettings(**clean).resolved()
