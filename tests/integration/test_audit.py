"""The audit trail against a real server, on SQLite and PostgreSQL: every item creation and token change
is recorded with its actor, address and parameters; ``GET /v1/audit`` filters and pages it; the CLI makes
a token that then works, and reads the trail."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from stagewatch.domain.events import Event
from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.service.audit import audit_filter, audit_page
from stagewatch.service.ingest import ingest_now
from stagewatch.store.audit import Actor
from stagewatch.store.engine import Database, open_database
from tests.conftest import LiveServer, api_token


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit(server: LiveServer, token: str, **params: Any) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/v1/audit", params=params, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


def post_events(server: LiveServer, token: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    answer = httpx.post(f"{server.url}/v1/events", json=events, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


def stagewatch(*args: str) -> subprocess.CompletedProcess[str]:
    """The console script, with none of this shell's STAGEWATCH_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STAGEWATCH_")} | {"COLUMNS": "200"}
    command = [sys.executable, "-m", "stagewatch", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=clean)


@pytest.fixture
def reader(auth_server: LiveServer) -> str:
    return api_token(auth_server.database_url, unique("reader"), "read")


@pytest.fixture
def module_db(auth_server: LiveServer) -> Iterator[Database]:
    db = open_database(auth_server.database_url)
    yield db
    db.dispose()


# --- what is recorded -------------------------------------------------------------------------------


def test_each_new_item_is_audited_with_its_token_address_and_parameters(
    auth_server: LiveServer, reader: str
) -> None:
    name, vid_a, vid_b = unique("webhook"), unique("vid"), unique("vid")
    ingester = api_token(auth_server.database_url, name, "ingest")
    batch = [
        {"id": unique("e"), "type": "item.created", "item_id": vid_a, "account": "acct-7",
         "source": "webhook", "params": {"url": "https://cdn.example.com/a.mp4"}},
        {"id": unique("e"), "type": "run.started", "item_id": vid_a, "stage": "download"},
        {"id": unique("e"), "type": "item.created", "item_id": vid_b},
    ]  # fmt: skip
    assert post_events(auth_server, ingester, batch)["accepted"] == 3
    assert post_events(auth_server, ingester, batch)["duplicate"] == 3  # a redelivery creates nothing

    rows = audit(auth_server, reader, actor=name)["audit"]
    assert [(row["action"], row["target"]) for row in rows] == [
        ("item.create", vid_b),
        ("item.create", vid_a),
    ]
    first = rows[1]
    assert first["source"] == "127.0.0.1"
    assert first["params"] == {
        "params": {"url": "https://cdn.example.com/a.mp4"}, "source": "webhook", "account": "acct-7",
    }  # fmt: skip


def test_batches_sharing_a_commit_are_each_audited_with_their_own_token(
    auth_server: LiveServer, reader: str
) -> None:
    names = [unique("worker-a"), unique("worker-b")]
    tokens = [api_token(auth_server.database_url, name, "ingest") for name in names]
    prefix = unique("shared")

    def send(n: int) -> None:
        event = {"id": f"{prefix}-{n}", "type": "item.created", "item_id": f"{prefix}-{n}"}
        post_events(auth_server, tokens[n % 2], [event])

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(send, range(60)))
    for parity, name in enumerate(names):
        rows = audit(auth_server, reader, actor=name, limit=100)["audit"]
        assert sorted(row["target"] for row in rows) == sorted(f"{prefix}-{n}" for n in range(parity, 60, 2))


def test_token_creation_and_revocation_are_audited(auth_server: LiveServer, reader: str) -> None:
    admin_name, made = unique("admin"), unique("made")
    admin = api_token(auth_server.database_url, admin_name, "admin")
    body = {"name": made, "scopes": ["ingest", "read"]}
    assert httpx.post(f"{auth_server.url}/v1/tokens", json=body, headers=bearer(admin)).status_code == 201
    revoke = httpx.post(
        f"{auth_server.url}/v1/tokens/{made}/revoke", json={"reason": "rotated"}, headers=bearer(admin)
    )
    assert revoke.status_code == 200
    rows = audit(auth_server, reader, target=made)["audit"]
    assert [(r["action"], r["actor"], r["source"]) for r in rows] == [
        ("token.revoke", admin_name, "127.0.0.1"),
        ("token.create", admin_name, "127.0.0.1"),
    ]
    assert rows[0]["reason"] == "rotated" and rows[1]["params"] == {"scopes": ["ingest", "read"]}
    assert "sw_" not in json.dumps(rows), "the token itself is never written to the trail"


def test_ingest_in_process_audits_only_when_the_sender_is_known(
    module_db: Database, registry: PipelineRegistry
) -> None:
    vid_known, vid_anonymous = unique("vid"), unique("vid")
    known = [
        Event.model_validate({"id": unique("e"), "type": "item.created", "item_id": vid_known, "time": 1.8e9})
    ]
    unknown = [
        Event.model_validate(
            {"id": unique("e"), "type": "item.created", "item_id": vid_anonymous, "time": 1.8e9}
        )
    ]
    ingest_now(module_db, registry, known, Actor("importer", "10.0.0.7"))
    ingest_now(module_db, registry, known, Actor("importer", "10.0.0.7"))
    ingest_now(module_db, registry, unknown)
    rows = audit_page(module_db, audit_filter(action="item.create", target=vid_known))["audit"]
    assert [(r["actor"], r["source"]) for r in rows] == [("importer", "10.0.0.7")]
    assert audit_page(module_db, audit_filter(target=vid_anonymous))["audit"] == []


# --- reading it back --------------------------------------------------------------------------------


def test_filters_and_pages_come_newest_first(auth_server: LiveServer, reader: str) -> None:
    name = unique("pager")
    ingester = api_token(auth_server.database_url, name, "ingest")
    vids = [unique("page-vid") for _ in range(7)]
    marks = []
    for vid in vids:
        post_events(auth_server, ingester, [{"id": unique("e"), "type": "item.created", "item_id": vid}])
        marks.append(time.time())
        time.sleep(0.01)

    seen, cursor = [], None
    while True:
        page = audit(auth_server, reader, actor=name, limit=3, **({"cursor": cursor} if cursor else {}))
        assert len(page["audit"]) <= 3
        seen += [row["target"] for row in page["audit"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == vids[::-1]

    window = audit(auth_server, reader, actor=name, since=f"{marks[1]:.6f}", until=f"{marks[4]:.6f}")
    assert [row["target"] for row in window["audit"]] == vids[4:1:-1]
    assert audit(auth_server, reader, action="item.create", target=vids[0])["audit"][0]["actor"] == name
    assert audit(auth_server, reader, actor=name, action="token.create")["audit"] == []


def test_bad_filters_are_refused_with_the_field_named(auth_server: LiveServer, reader: str) -> None:
    for params, status, field in (
        ({"since": "last tuesday"}, 422, "since"),
        ({"until": "nan"}, 422, "until"),
        ({"cursor": "not-a-cursor"}, 400, "cursor"),
        ({"limit": "0"}, 422, "limit"),
    ):
        answer = httpx.get(f"{auth_server.url}/v1/audit", params=params, headers=bearer(reader))
        assert (answer.status_code, answer.json()["field"]) == (status, field), params


# --- the CLI ----------------------------------------------------------------------------------------


def test_a_token_made_by_the_cli_works_and_its_creation_is_in_the_trail(auth_server: LiveServer) -> None:
    name, url, db_url = unique("cli-made"), auth_server.url, auth_server.database_url
    made = stagewatch("token", "create", name, "--scope", "read", "--scope", "ingest", "--db", db_url)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("sw_") and "\n" not in token
    assert "cannot be shown again" in made.stderr

    assert stagewatch("items", "--url", url, "--token", token).returncode == 0
    refused = stagewatch("items", "--url", url)
    assert refused.returncode == 1 and "401" in refused.stderr and "STAGEWATCH_TOKEN" in refused.stderr

    shown = stagewatch("audit", "--url", url, "--token", token, "--target", name, "--json")
    assert shown.returncode == 0, shown.stderr
    [row] = json.loads(shown.stdout)["audit"]
    assert (row["action"], row["actor"], row["params"]) == (
        "token.create", f"cli:{getpass.getuser()}", {"scopes": ["ingest", "read"]},
    )  # fmt: skip
    table = stagewatch("audit", "--url", url, "--token", token, "--target", name, "--since", "1h")
    assert table.returncode == 0 and "token.create" in table.stdout and name in table.stdout


def test_the_token_commands_refuse_bad_input_with_exit_2(auth_server: LiveServer) -> None:
    db_url, name = auth_server.database_url, unique("twice")
    assert stagewatch("token", "create", name, "--scope", "read", "--db", db_url).returncode == 0
    again = stagewatch("token", "create", name, "--scope", "read", "--db", db_url)
    assert again.returncode == 2 and "exists already" in again.stderr
    assert stagewatch("token", "create", unique("x"), "--scope", "root", "--db", db_url).returncode == 2
    assert stagewatch("token", "create", "bad name", "--scope", "read", "--db", db_url).returncode == 2
    missing = stagewatch("token", "revoke", unique("nobody"), "--db", db_url)
    assert missing.returncode == 1 and "no token named" in missing.stderr
    reader = api_token(db_url, unique("reader"), "read")
    bad_since = stagewatch("audit", "--url", auth_server.url, "--token", reader, "--since", "yesterday")
    assert bad_since.returncode == 2 and "since" in bad_since.stderr


def test_token_list_and_revoke_from_the_cli(auth_server: LiveServer) -> None:
    db_url, name = auth_server.database_url, unique("listed")
    token = api_token(db_url, name, "operate")
    listed = stagewatch("token", "list", "--db", db_url, "--json")
    assert listed.returncode == 0 and token not in listed.stdout
    [entry] = [t for t in json.loads(listed.stdout)["tokens"] if t["name"] == name]
    assert entry["scopes"] == ["operate"] and entry["active"] is True
    revoked = stagewatch("token", "revoke", name, "--reason", "done", "--db", db_url)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    table = stagewatch("token", "list", "--db", db_url)
    [line] = [line for line in table.stdout.splitlines() if line.startswith(name)]
    assert line.split()[-1] == "revoked"
