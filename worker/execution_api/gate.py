"""Before any route: the API version the client speaks and the bearer token of its try.

A pure ASGI middleware (cheap on every call): an unknown ``airflow-api-version`` is
400, a missing or invalid token 401, each with a JSON detail; a valid token's try is
put in ``request.state.ti_uuid``. A token past half its life is renewed through the
``Refreshed-API-Token`` header, which the SDK's client adopts.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

from airflow.sdk.api.datamodels._generated import API_VERSION

from worker.execution_api.tokens import Claims, TokenError, mint, verify

OPEN_PATHS = frozenset({"/health/ping"})
VERSION_HEADER = b"airflow-api-version"


#: Whether a try (by uuid) still runs under this server's worker.
Live = Callable[[uuid.UUID], bool]


class Gate:
    """``live`` (None: every try) limits renewal to tries still running here, so the token
    of a try that ended (kept by a process it left behind, say) dies at its expiry."""

    def __init__(self, app, *, secret: bytes, ttl_s: float, live: Live | None = None) -> None:
        self.app, self.secret, self.ttl_s, self.live = app, secret, ttl_s, live
        self._genuine: dict[str, Claims] = {}  # tokens whose signature and claims were checked

    def _claims(self, token: str) -> Claims:
        """A genuine token's claims, its signature checked once per token (a try makes
        several calls with one token); its expiry is checked on every call."""
        claims = self._genuine.get(token)
        if claims is None:
            claims = verify(token, self.secret)
            if len(self._genuine) >= 4096:
                self._genuine.clear()
            self._genuine[token] = claims
        elif claims.exp <= time.time():
            raise TokenError("token expired")
        return claims

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        version = headers.get(VERSION_HEADER, API_VERSION.encode()).decode("latin-1")
        if version != API_VERSION:
            return await _refuse(send, 400, "unsupported_api_version",
                                 f"Sluice serves Execution API version {API_VERSION}; "
                                 f"the client asked for {version!r}")
        try:
            claims = self._claims(_bearer(headers))
        except TokenError as exc:
            return await _refuse(send, 401, "unauthorized", str(exc),
                                 [(b"www-authenticate", b"Bearer")])
        scope.setdefault("state", {})["ti_uuid"] = claims.sub
        extra = [(VERSION_HEADER, API_VERSION.encode())]
        if claims.exp - time.time() < self.ttl_s / 2 and (
                self.live is None or self.live(claims.sub)):
            extra.append((b"refreshed-api-token",
                          mint(claims.sub, self.secret, self.ttl_s).encode()))
        await self.app(scope, receive, _adding(send, extra))


def _bearer(headers: dict[bytes, bytes]) -> str:
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("Missing auth token")
    return token.strip()


def _adding(send, extra: list[tuple[bytes, bytes]]):
    async def wrapped(message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)
    return wrapped


async def _refuse(send, status: int, reason: str, message: str,
                  headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": {"reason": reason, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
