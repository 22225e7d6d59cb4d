"""Settings of the Execution API server (prefix ``SLUICE_``), built by its caller."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.config import default_home


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ApiSettings(BaseSettings):
    """What the server needs: who it answers for, how it signs tokens, where the key is.

    ``worker_id`` is the worker whose running tries the API may write (the same id the
    worker claims instances with). ``api_token_secret`` signs the per-try tokens; by
    default a fresh one per process, since the worker that mints a token serves it.
    ``fernet_key`` (comma-separated for rotation, first one encrypts) or else
    ``$SLUICE_HOME/fernet.key`` encrypts secret values at rest.
    """

    model_config = SettingsConfigDict(env_prefix="SLUICE_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    worker_id: str = Field(default_factory=_worker_id)
    api_host: str = "127.0.0.1"
    api_port: int = 8793
    api_token_secret: SecretStr = Field(
        default_factory=lambda: SecretStr(secrets.token_urlsafe(32)))
    api_token_ttl_s: float = Field(default=24 * 3600.0, gt=0)
    fernet_key: SecretStr | None = None
    max_map_length: int = 1024
    max_xcom_bytes: int = 1024 * 1024
