"""Who may call ``sluice api-server``: login, tokens, roles; secure by default.

Token and password rules are plain functions; the rest runs against the
api-server as a real process on a real database.
"""

from __future__ import annotations

import json
import stat
import time

import anyio
import pytest

from apiserver import auth
from tests.api_server import call, login, start_api_server
from tests.cluster import Cluster

pytestmark = pytest.mark.timeout(60)
USERS = {"alice": ("admin", "alice-pw"), "bob": ("viewer", "bob-pw"),
         "carol": ("user", "carol-pw")}


def test_a_token_is_refused_when_tampered_with_expired_or_signed_with_another_key():
    key = b"k" * 32
    token = auth.encode_token({"sub": "alice", "exp": time.time() + 60}, key)
    assert auth.decode_token(token, key)["sub"] == "alice"
    header, body, signature = token.split(".")
    forged = auth._b64(json.dumps({"sub": "alice", "role": "admin",
                                   "exp": time.time() + 60}).encode())
    for bad in (f"{header}.{forged}.{signature}", token[:-2], "not-a-jwt",
                auth.encode_token({"sub": "alice", "exp": time.time() + 60}, b"other" * 8),
                auth.encode_token({"sub": "alice", "exp": time.time() - 1}, key)):
        with pytest.raises(auth.AuthError):
            auth.decode_token(bad, key)


def test_passwords_are_kept_as_salted_hashes_only(tmp_path):
    hashes, new = auth.ensure_passwords(tmp_path, {"admin": "admin"})
    assert set(new) == {"admin"}
    text = (tmp_path / auth.USERS_FILE).read_text()
    assert new["admin"] not in text and hashes["admin"].startswith("scrypt$")
    assert stat.S_IMODE((tmp_path / auth.USERS_FILE).stat().st_mode) == 0o600
    assert auth.check_password(new["admin"], hashes["admin"])
    assert not auth.check_password("wrong", hashes["admin"])
    again, none_new = auth.ensure_passwords(tmp_path, {"admin": "admin"})  # kept, not redone
    assert again == hashes and none_new == {}
    with pytest.raises(auth.AuthError, match="'eve:root' is not NAME:ROLE"):
        auth.parse_users("alice:admin,eve:root")


async def _server(cluster: Cluster, db) -> str:
    await db.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized) VALUES"
                     " ('d', '/dags/d.py', 'h', $1)", {"dag_id": "d", "fileloc": "/dags/d.py",
                                                        "tasks": []})
    return await start_api_server(cluster, USERS)


async def test_every_route_but_health_and_version_needs_a_valid_token(cluster: Cluster, db):
    base = await _server(cluster, db)
    api = f"{base}/api/v2"
    get = lambda url, **kw: anyio.to_thread.run_sync(lambda: call(url, **kw))  # noqa: E731
    assert (await get(f"{api}/monitor/health"))[0] == 200
    assert (await get(f"{api}/version"))[0] == 200
    for path in ("/dags", "/dags/d", "/variables", "/connections", "/pools",
                 "/dags/~/dagRuns", "/assets"):
        status, body = await get(api + path)
        assert (status, body) == (401, {"detail": "Not authenticated"}), path
    token = await anyio.to_thread.run_sync(login, base, "bob", "bob-pw")
    status, body = await get(f"{api}/dags", token=token[:-3] + "abc")
    assert (status, body) == (401, {"detail": "Invalid JWT token"})
    status, body = await get(f"{api}/dags", headers={"Authorization": "Bearer nonsense"})
    assert status == 401
    assert (await get(f"{api}/dags", token=token))[0] == 200
    assert (await get(f"{base}/auth/token", method="POST",
                      body={"username": "bob", "password": "nope"}))[0] == 401
    status, body = await get(f"{base}/auth/token", method="POST",
                             raw=b"username=bob&password=bob-pw",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 201 and body["access_token"]


async def test_a_viewer_reads_but_cannot_change_anything(cluster: Cluster, db):
    base = await _server(cluster, db)
    api = f"{base}/api/v2"
    viewer, user, admin = [await anyio.to_thread.run_sync(login, base, n, USERS[n][1])
                           for n in ("bob", "carol", "alice")]
    call_ = lambda *a, **kw: anyio.to_thread.run_sync(lambda: call(*a, **kw))  # noqa: E731

    status, body = await call_(f"{api}/dags/d", token=viewer)
    assert status == 200 and body["is_paused"] is False
    status, body = await call_(f"{api}/dags/d", "PATCH", {"is_paused": True}, token=viewer)
    assert status == 403 and "'bob' (viewer) may not PATCH /api/v2/dags/d" in body["detail"]
    for path, payload in (("/variables", {"key": "k", "value": "v"}),
                          ("/pools", {"name": "p", "slots": 1})):
        assert (await call_(api + path, "POST", payload, token=viewer))[0] == 403
        assert (await call_(api + path, "POST", payload, token=user))[0] == 403  # op and up
    assert (await db.fetchval("SELECT is_paused FROM dag WHERE dag_id = 'd'")) is False

    status, body = await call_(f"{api}/dags/d", "PATCH", {"is_paused": True}, token=user)
    assert status == 200 and body["is_paused"] is True
    assert (await call_(f"{api}/variables", "POST", {"key": "k", "value": "v"},
                        token=admin))[0] == 201
    assert await db.fetchval("SELECT is_paused FROM dag WHERE dag_id = 'd'") is True
    # variables and connections hold secrets: reading them takes the op role, as in Airflow
    for path in ("/variables", "/variables/k", "/connections"):
        assert (await call_(api + path, token=viewer))[0] == 403
        assert (await call_(api + path, token=user))[0] == 403
    status, body = await call_(f"{api}/variables/k", token=admin)
    assert status == 200 and body["value"] == "v"


def test_a_short_signing_key_is_refused(tmp_path):
    from apiserver.auth import AuthError, secret_key

    (tmp_path / "api_secret.key").write_text("")
    with pytest.raises(AuthError, match="has 0 bytes; it needs at least 32"):
        secret_key(None, tmp_path)
    with pytest.raises(AuthError, match="SLUICE_API_SECRET_KEY has 5 bytes"):
        secret_key("short", tmp_path)
    assert len(secret_key(None, tmp_path / "fresh")) >= 32


async def test_what_sluice_lacks_is_a_clear_4xx_naming_it(cluster: Cluster, db):
    base = await _server(cluster, db)
    token = await anyio.to_thread.run_sync(login, base, "alice", "alice-pw")
    status, body = await anyio.to_thread.run_sync(
        lambda: call(f"{base}/api/v2/assets", token=token))
    assert status == 404 and "Sluice does not implement GET /api/v2/assets" in body["detail"]
    status, body = await anyio.to_thread.run_sync(
        lambda: call(f"{base}/api/v2/dags?bundle_name=x", token=token))
    assert status == 400 and "bundle_name" in body["detail"]
    status, body = await anyio.to_thread.run_sync(
        lambda: call(f"{base}/api/v2/dags/d", "DELETE", token=token))
    assert status == 404 and "DELETE /api/v2/dags/d" in body["detail"]
