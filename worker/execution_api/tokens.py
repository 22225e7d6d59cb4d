"""Per-try bearer tokens: the task-instance UUID and an expiry, signed with HMAC-SHA256.

``<payload>.<signature>``, both base64url without padding; the payload is
``{"sub": "<uuid>", "exp": <unix seconds>}``. A try's UUID changes with every new
try, so a token dies with its try even before it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass


class TokenError(Exception):
    """The token is missing, malformed, forged or expired (the message says which)."""


@dataclass(frozen=True)
class Claims:
    sub: uuid.UUID
    exp: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def mint(ti_uuid: uuid.UUID | str, secret: bytes, ttl_s: float, *, now: float | None = None) -> str:
    """A token for the try ``ti_uuid``, valid ``ttl_s`` seconds."""
    exp = int((time.time() if now is None else now) + ttl_s)
    payload = _b64(json.dumps({"sub": str(ti_uuid), "exp": exp}, separators=(",", ":")).encode())
    return f"{payload}.{_sign(secret, payload)}"


def verify(token: str, secret: bytes, *, now: float | None = None) -> Claims:
    """The claims of a genuine, unexpired token; :class:`TokenError` otherwise."""
    payload, _, signature = token.partition(".")
    if not payload or not signature:
        raise TokenError("malformed token")
    if not hmac.compare_digest(signature, _sign(secret, payload)):
        raise TokenError("bad token signature")
    try:
        body = json.loads(_unb64(payload))
        claims = Claims(sub=uuid.UUID(body["sub"]), exp=float(body["exp"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise TokenError("malformed token claims") from exc
    if claims.exp <= (time.time() if now is None else now):
        raise TokenError("token expired")
    return claims
