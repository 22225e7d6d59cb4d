"""Who may call the api-server: users, roles, password hashes and login tokens.

As Airflow's simple auth manager: users and roles are configured
(``SLUICE_API_USERS=alice:admin,bob:viewer``), ``POST /auth/token`` with a user
name and password answers a JWT, and every request but ``monitor/health`` and
``version`` carries it (``Authorization: Bearer``, or the ``_token`` cookie the
web UI sets). A configured user with no password yet gets a generated one at
the server's start, printed once; only its scrypt hash is kept, in
``$SLUICE_HOME/api_users.json`` (0600). Delete a user's entry there to have a
new password generated at the next start.

Roles, each granting what the ones before it do: ``viewer`` reads everything;
``user`` also pauses DAGs, triggers, clears and marks runs and task instances;
``op`` also writes variables, connections and pools; ``admin`` everything.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from shared.config import write_private

ROLES = ("viewer", "user", "op", "admin")
USERS_FILE = "api_users.json"
SECRET_FILE = "api_secret.key"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class AuthError(Exception):
    """A login or token refused; the message is safe to show (it names no secret)."""


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def may(self, role: str) -> bool:
        """Whether this user's role grants what ``role`` does."""
        return ROLES.index(self.role) >= ROLES.index(role)


# --- passwords ---------------------------------------------------------------------------------
def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${_b64(salt)}${_b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, salt, digest = stored.split("$")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=_unb64(salt), **_SCRYPT)
    return hmac.compare_digest(got, _unb64(digest))


def parse_users(spec: str) -> dict[str, str]:
    """``alice:admin,bob:viewer`` as ``{name: role}``; a bad entry is one clear line."""
    users: dict[str, str] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, sep, role = entry.partition(":")
        if not sep or not name or role not in ROLES:
            raise AuthError(f"SLUICE_API_USERS: {entry!r} is not NAME:ROLE with ROLE one of "
                            f"{', '.join(ROLES)}")
        users[name] = role
    if not users:
        raise AuthError("SLUICE_API_USERS names no user: nobody could log in")
    return users


def ensure_passwords(home: Path, users: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The password hashes of ``users``; a user without one gets a new password.

    Returns ``(hashes, new_passwords)``: the new plain passwords are for the caller
    to print once, never stored. Two servers starting at once take turns (a lock).
    """
    home.mkdir(parents=True, exist_ok=True)
    path = home / USERS_FILE
    with open(home / f".{USERS_FILE}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        hashes = _read_hashes(path)
        new = {name: secrets.token_urlsafe(12) for name in users if name not in hashes}
        if new:
            hashes.update({name: hash_password(pw) for name, pw in new.items()})
            write_private(path, json.dumps(hashes, indent=2, sort_keys=True))
    return {name: hashes[name] for name in users}, new


def set_password(home: Path, name: str, password: str) -> None:
    """Store ``name``'s password hash (replacing any), for scripts and tests."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / USERS_FILE
    with open(home / f".{USERS_FILE}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        hashes = _read_hashes(path)
        hashes[name] = hash_password(password)
        write_private(path, json.dumps(hashes, indent=2, sort_keys=True))


def _read_hashes(path: Path) -> dict[str, str]:
    try:
        found = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise AuthError(f"{path} is not JSON: fix or delete it") from None
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        raise AuthError(f"{path} must map user names to password hashes")
    return found


# --- tokens ------------------------------------------------------------------------------------
def secret_key(configured: str | None, home: Path) -> bytes:
    """The key signing tokens: configured, else ``home``'s key file (created 0600)."""
    if configured:
        return _strong(configured.encode(), "SLUICE_API_SECRET_KEY")
    path = home / SECRET_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.new")
        write_private(tmp, secrets.token_urlsafe(48))
        try:  # two servers starting at once: the first complete file linked wins
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return _strong(path.read_text().strip().encode(), str(path))


MIN_KEY_BYTES = 32


def _strong(key: bytes, where: str) -> bytes:
    """A signing key long enough that no one can guess it or sign with an empty one."""
    if len(key) < MIN_KEY_BYTES:
        raise AuthError(f"the token signing key in {where} has {len(key)} bytes; it needs at "
                        f"least {MIN_KEY_BYTES} (delete the file to have one generated)")
    return key


def encode_token(claims: dict, key: bytes) -> str:
    """An HS256 JWT of ``claims``."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def decode_token(token: str, key: bytes, now: float | None = None) -> dict:
    """The claims of a JWT this server signed, unexpired; else ``AuthError``."""
    try:
        header, body, signature = token.split(".")
        expected = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            raise AuthError("Invalid JWT token")
        if json.loads(_unb64(header)).get("alg") != "HS256":
            raise AuthError("Invalid JWT token")
        claims = json.loads(_unb64(body))
    except (ValueError, TypeError):
        raise AuthError("Invalid JWT token") from None
    if not isinstance(claims, dict) or claims.get("exp", 0) < (now or time.time()):
        raise AuthError("Invalid JWT token: expired")
    return claims


class Authenticator:
    """Logs users in and reads their tokens back."""

    def __init__(self, roles: dict[str, str], hashes: dict[str, str], key: bytes,
                 ttl_s: float) -> None:
        self._roles, self._hashes, self._key, self._ttl_s = roles, hashes, key, ttl_s
        self._dummy = hash_password(secrets.token_urlsafe(12))  # same work for unknown users

    def login(self, name: str, password: str) -> str:
        stored = self._hashes.get(name)
        ok = check_password(password, stored or self._dummy) and stored is not None
        if not ok:
            raise AuthError("Invalid username or password")
        now = int(time.time())
        return encode_token({"sub": name, "role": self._roles[name], "iat": now,
                             "exp": now + int(self._ttl_s)}, self._key)

    def user(self, token: str) -> User:
        claims = decode_token(token, self._key)
        name = claims.get("sub")
        if name not in self._roles:  # a user removed from the configuration
            raise AuthError("Invalid JWT token: unknown user")
        return User(name, self._roles[name])  # the role configured now, not the token's


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
