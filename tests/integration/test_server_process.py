"""The server as a real process on loopback, on SQLite and on PostgreSQL."""

from __future__ import annotations

import httpx

from tests.conftest import LiveServer


def test_server_answers_health_and_readiness(live_server: LiveServer) -> None:
    assert httpx.get(f"{live_server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{live_server.url}/readyz").json()
    assert ready["status"] == "ok"
    assert ready["checks"]["database"]["dialect"] in {"sqlite", "postgresql"}


def test_events_posted_over_http_make_the_item_readable(live_server: LiveServer) -> None:
    batch = [
        {"id": "p-1", "type": "item.created", "item_id": "vid-1", "account": "acct-9"},
        {"id": "p-2", "type": "run.started", "item_id": "vid-1", "stage": "download"},
    ]
    answer = httpx.post(f"{live_server.url}/v1/events", json=batch).json()
    assert (answer["accepted"], answer["duplicate"], answer["rejected"]) == (2, 0, 0)
    item = httpx.get(f"{live_server.url}/v1/items/vid-1").json()
    assert (item["status"], item["stage"], item["account"]) == ("running", "download", "acct-9")
