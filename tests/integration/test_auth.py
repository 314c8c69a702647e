"""API tokens and scopes against a real server over HTTP, on SQLite and PostgreSQL: 401 without a good
token, 403 without the scope, revocation, and ``serve`` refusing to run open to the network."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stagewatch.errors import Unauthenticated
from stagewatch.service.auth import TokenVerifier, revoke_token
from stagewatch.store.audit import Actor
from stagewatch.store.engine import Database, open_database
from tests.conftest import AUTH_CACHE_SECONDS, LiveServer, api_token, start_server, stop_server

EVENT = {"type": "item.created", "item_id": "auth-vid"}


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post_event(server: LiveServer, token: str | None) -> httpx.Response:
    headers = bearer(token) if token else {}
    return httpx.post(f"{server.url}/v1/events", json=[{**EVENT, "id": unique("e")}], headers=headers)


def get(server: LiveServer, path: str, token: str | None = None) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", headers=bearer(token) if token else {})


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STAGEWATCH_")}
    command = [sys.executable, "-m", "stagewatch", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=clean)


@pytest.fixture
def module_db(auth_server: LiveServer) -> Iterator[Database]:
    db = open_database(auth_server.database_url)
    yield db
    db.dispose()


# --- 401, 403, 200 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/v1/items", "/v1/items/x", "/v1/summary", "/v1/logs", "/v1/audit", "/v1/tokens"]
)
def test_a_read_without_a_token_is_401_naming_authorization(auth_server: LiveServer, path: str) -> None:
    answer = get(auth_server, path)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["field"] == "authorization"
    assert "Authorization: Bearer" in answer.json()["error"]


def test_ingest_without_a_token_is_401_and_stores_nothing(auth_server: LiveServer) -> None:
    for path in ("/v1/events", "/v1/logs"):
        answer = httpx.post(f"{auth_server.url}{path}", json=[{**EVENT, "id": "no-token", "message": "m"}])
        assert answer.status_code == 401, path
    reader = api_token(auth_server.database_url, unique("reader"), "read")
    assert get(auth_server, "/v1/items/auth-vid", reader).status_code == 404


@pytest.mark.parametrize(
    "header",
    ["Bearer sw_not-a-real-token", "Bearer not-even-the-format", "Basic dXNlcjpwYXNz", "Bearer", "sw_x"],
)
def test_a_bad_token_is_401(auth_server: LiveServer, header: str) -> None:
    answer = httpx.get(f"{auth_server.url}/v1/items", headers={"Authorization": header})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["field"] == "authorization"


def test_a_token_without_the_scope_is_403_naming_the_scope(auth_server: LiveServer) -> None:
    ingester = api_token(auth_server.database_url, unique("ingester"), "ingest")
    reader = api_token(auth_server.database_url, unique("reader"), "read")
    for answer, scope in (
        (get(auth_server, "/v1/items", ingester), "read"),
        (get(auth_server, "/v1/audit", ingester), "read"),
        (post_event(auth_server, reader), "ingest"),
        (get(auth_server, "/v1/tokens", reader), "admin"),
    ):
        assert answer.status_code == 403
        assert f"the {scope!r} scope" in answer.json()["error"]


def test_a_token_with_the_scope_is_let_in(auth_server: LiveServer) -> None:
    ingester = api_token(auth_server.database_url, unique("ingester"), "ingest")
    reader = api_token(auth_server.database_url, unique("reader"), "read")
    answer = post_event(auth_server, ingester)
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    log_line = {"id": unique("log"), "message": "hello", "item_id": "auth-vid"}
    logs = httpx.post(f"{auth_server.url}/v1/logs", json=[log_line], headers=bearer(ingester))
    assert logs.status_code == 200 and logs.json()["accepted"] == 1
    assert get(auth_server, "/v1/items/auth-vid", reader).json()["item_id"] == "auth-vid"
    for path in ("/v1/items", "/v1/summary", "/v1/logs?item_id=auth-vid", "/v1/audit"):
        assert get(auth_server, path, reader).status_code == 200, path


def test_admin_implies_every_scope_and_operate_implies_read(auth_server: LiveServer) -> None:
    admin = api_token(auth_server.database_url, unique("admin"), "admin")
    operator = api_token(auth_server.database_url, unique("operator"), "operate")
    assert post_event(auth_server, admin).status_code == 200
    for path in ("/v1/items", "/v1/audit", "/v1/tokens"):
        assert get(auth_server, path, admin).status_code == 200, path
    assert get(auth_server, "/v1/items", operator).status_code == 200
    assert post_event(auth_server, operator).status_code == 403
    assert get(auth_server, "/v1/tokens", operator).status_code == 403


def test_health_checks_need_no_token(auth_server: LiveServer) -> None:
    assert get(auth_server, "/healthz").status_code == 200
    assert get(auth_server, "/readyz").status_code == 200


# --- managing tokens over HTTP ----------------------------------------------------------------------


def test_a_token_made_over_http_is_shown_once_works_and_its_name_is_unique(auth_server: LiveServer) -> None:
    admin = api_token(auth_server.database_url, unique("admin"), "admin")
    name = unique("made")
    made = httpx.post(
        f"{auth_server.url}/v1/tokens", json={"name": name, "scopes": ["read"]}, headers=bearer(admin)
    )
    assert made.status_code == 201
    token = made.json()["token"]
    assert token.startswith("sw_") and made.json()["scopes"] == ["read"]
    assert get(auth_server, "/v1/items", token).status_code == 200
    again = httpx.post(
        f"{auth_server.url}/v1/tokens", json={"name": name, "scopes": ["read"]}, headers=bearer(admin)
    )
    assert again.status_code == 409 and again.json()["field"] == "name"
    bad = httpx.post(
        f"{auth_server.url}/v1/tokens", json={"name": unique("x"), "scopes": ["root"]}, headers=bearer(admin)
    )
    assert bad.status_code == 422 and bad.json()["field"] == "scopes"


def test_the_token_list_never_shows_a_token_or_its_hash(auth_server: LiveServer) -> None:
    admin = api_token(auth_server.database_url, unique("admin"), "admin")
    used_name = unique("used")
    used = api_token(auth_server.database_url, used_name, "read")
    assert get(auth_server, "/v1/items", used).status_code == 200
    answer = get(auth_server, "/v1/tokens", admin)
    text = answer.text
    for secret in (admin, used):
        assert secret not in text and hashlib.sha256(secret.encode()).hexdigest() not in text
    listed = {entry["name"]: entry for entry in answer.json()["tokens"]}
    assert set(listed[used_name]) == {
        "name", "prefix", "scopes", "active", "created_at", "created_by", "revoked_at", "last_used_at",
    }  # fmt: skip
    assert listed[used_name]["last_used_at"] is not None and listed[used_name]["prefix"] == used[:10]


def test_a_token_revoked_over_http_is_refused_at_once(auth_server: LiveServer) -> None:
    admin = api_token(auth_server.database_url, unique("admin"), "admin")
    name = unique("doomed")
    doomed = api_token(auth_server.database_url, name, "read")
    assert get(auth_server, "/v1/items", doomed).status_code == 200  # now in the server's cache
    revoked = httpx.post(
        f"{auth_server.url}/v1/tokens/{name}/revoke", json={"reason": "leaked"}, headers=bearer(admin)
    )
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    assert get(auth_server, "/v1/items", doomed).status_code == 401
    missing = httpx.post(f"{auth_server.url}/v1/tokens/{unique('nobody')}/revoke", headers=bearer(admin))
    assert missing.status_code == 404


def test_a_token_revoked_by_the_cli_is_refused_within_the_cache_time(auth_server: LiveServer) -> None:
    name = unique("doomed")
    doomed = api_token(auth_server.database_url, name, "read")
    assert get(auth_server, "/v1/items", doomed).status_code == 200
    revoked = run_cli("token", "revoke", name, "--reason", "rotated", "--db", auth_server.database_url)
    assert revoked.returncode == 0, revoked.stderr
    revoked_at = time.monotonic()
    while get(auth_server, "/v1/items", doomed).status_code != 401:
        assert time.monotonic() - revoked_at < AUTH_CACHE_SECONDS + 5, "the revoke never took effect"
        time.sleep(0.1)


# --- the verifier, in process -----------------------------------------------------------------------


def test_the_verifier_trusts_a_token_for_its_cache_time_and_forgets_on_demand(
    auth_server: LiveServer, module_db: Database
) -> None:
    name = unique("cached")
    token = api_token(auth_server.database_url, name, "operate")
    verifier = TokenVerifier(module_db, ttl=0.3)
    assert verifier.cached(token) is None
    identity = verifier.verify(token)
    assert identity.name == name and identity.scopes == {"operate", "read"}
    revoke_token(module_db, name, Actor("tests"))
    assert verifier.cached(token) == identity, "trusted until the cache time is up"
    time.sleep(0.35)
    assert verifier.cached(token) is None
    with pytest.raises(Unauthenticated):
        verifier.verify(token)
    other = api_token(auth_server.database_url, unique("other"), "read")
    verifier.verify(other)
    verifier.forget(verifier.verify(other).name)
    assert verifier.cached(other) is None


def test_last_used_is_written_at_most_once_a_minute(auth_server: LiveServer, module_db: Database) -> None:
    admin = api_token(auth_server.database_url, unique("admin"), "admin")
    name = unique("busy")
    token = api_token(auth_server.database_url, name, "read")
    verifier = TokenVerifier(module_db, ttl=0)  # every call reads the database
    verifier.verify(token)
    first = _last_used(auth_server, admin, name)
    time.sleep(0.05)
    verifier.verify(token)
    assert first is not None and _last_used(auth_server, admin, name) == first


def _last_used(server: LiveServer, admin: str, name: str) -> str | None:
    tokens = get(server, "/v1/tokens", admin).json()["tokens"]
    found: str | None = next(t["last_used_at"] for t in tokens if t["name"] == name)
    return found


# --- serve ------------------------------------------------------------------------------------------


def serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``stagewatch serve`` expected to exit at once (a timeout fails the test instead of hanging)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STAGEWATCH_")} | (env or {})
    command = [
        sys.executable,
        "-m",
        "stagewatch",
        "serve",
        "--db",
        f"sqlite:///{tmp_path / 'open.db'}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, env=clean)


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("--host", "0.0.0.0", "--no-auth"), {}),
        (("--host", "0.0.0.0", "--port", "0"), {"STAGEWATCH_AUTH": "false"}),
        (("--no-auth",), {"STAGEWATCH_HOST": "192.0.2.10"}),
    ],
)
def test_serve_refuses_to_run_without_auth_off_loopback(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    refused = serve(tmp_path, *args, env=env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "auth off" in refused.stderr
    assert "stagewatch token create NAME --scope" in refused.stderr and "127.0.0.1" in refused.stderr


def test_serve_without_auth_on_loopback_warns_that_auth_is_off(tmp_path: Path) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'open.db'}", tmp_path / "server.log", auth=False)
    try:
        assert post_event(server, None).status_code == 200
    finally:
        stop_server(server)
    assert "serve.auth_off" in server.log() and "'anonymous' with every scope" in server.log()


def test_serve_with_auth_and_no_token_says_how_to_make_one(tmp_path: Path) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path / "server.log", auth=True)
    try:
        assert post_event(server, None).status_code == 401
    finally:
        stop_server(server)
    assert "No API token exists yet" in server.log()
    assert "stagewatch token create NAME --scope" in server.log()
