"""Airflow's Execution API, served by Sluice's worker on PostgreSQL.

Only the Task SDK runtime imports this package (it needs Airflow's SDK installed).
"""

from __future__ import annotations

import uuid

from worker.execution_api.app import bind, create_app, serve
from worker.execution_api.config import ApiSettings
from worker.execution_api.tokens import mint

__all__ = ["ApiSettings", "bind", "create_app", "serve", "token_for"]


def token_for(settings: ApiSettings, ti_uuid: uuid.UUID | str) -> str:
    """The bearer token a task process uses for its try ``ti_uuid``."""
    return mint(ti_uuid, settings.api_token_secret.get_secret_value().encode(),
                settings.api_token_ttl_s)
