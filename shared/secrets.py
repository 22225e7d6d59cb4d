"""Secret values at rest: Fernet tokens, with the key Airflow users know how to rotate.

The key comes from ``SLUICE_FERNET_KEY`` (several, comma-separated: the first
encrypts, all decrypt, as Airflow's ``fernet_key``) or from ``$SLUICE_HOME/fernet.key``,
created on first use with mode 0600 (it may hold several keys the same way). The
Execution API, the triggerer and the ``sluice variables`` / ``sluice connections``
commands all read the key here, so a value one writes the others read. Plain
values and keys are never logged, nor put in an error message.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from shared.config import write_private

KEY_ENV = "SLUICE_FERNET_KEY"
KEY_FILE = "fernet.key"


class SecretsError(Exception):
    """The configured key is not a Fernet key, or a stored secret does not decrypt with it."""


def load_key_text(configured: str | None, home: Path) -> str:
    """The configured key(s), else the key file's, created (0600) when missing."""
    if configured:
        return configured
    path = home / KEY_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        home.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.new")
        write_private(tmp, Fernet.generate_key().decode())
        try:  # two processes starting at once: the first complete file linked wins
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return path.read_text().strip()


def secrets_for(home: Path) -> Secrets:
    """This installation's ``Secrets``: ``SLUICE_FERNET_KEY`` if set, else ``home``'s key file.

    Read when called (a command's or a daemon's start), never at import.
    """
    return Secrets(load_key_text(os.environ.get(KEY_ENV), home))


class Secrets:
    """Encrypts and decrypts secret column values (``None`` stays ``None``)."""

    def __init__(self, key_text: str) -> None:
        try:
            keys = [Fernet(k.strip().encode()) for k in key_text.split(",") if k.strip()]
        except ValueError:  # the key's text stays out of the message
            raise SecretsError(f"{KEY_ENV} (or $SLUICE_HOME/{KEY_FILE}) holds a value that is "
                               "not a Fernet key (32 url-safe base64-encoded bytes)") from None
        if not keys:
            raise SecretsError("no Fernet key configured")
        self._fernet = MultiFernet(keys)

    def encrypt(self, value: str | None) -> str | None:
        return None if value is None else self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str | None) -> str | None:
        if token is None:
            return None
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretsError("a stored secret does not decrypt with the configured "
                               "Fernet key(s)") from None

    def rotate(self, token: str | None) -> str | None:
        """``token`` encrypted again with the first key (it may be under any configured one)."""
        if token is None:
            return None
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretsError("a stored secret does not decrypt with the configured "
                               "Fernet key(s)") from None

    def __repr__(self) -> str:
        return "Secrets(<keys hidden>)"
