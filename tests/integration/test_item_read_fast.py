"""``GET /v1/items/{id}`` reads through the driver and answers with JSON it made itself; the answer must
be the very bytes the Core queries and FastAPI's serialisation of the dict made before, on SQLite and
PostgreSQL, with auth as strict as on every other read."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from pydantic import TypeAdapter
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from stagewatch.api.app import create_app
from stagewatch.domain.events import Event
from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.errors import NotFound
from stagewatch.service import query
from stagewatch.service.ingest import ingest_now
from stagewatch.service.views import history_view, item_view, run_view
from stagewatch.settings import Settings
from stagewatch.store import reads, schema
from stagewatch.store.engine import Database
from stagewatch.store.rows import item_from_row, run_from_row
from tests.conftest import LiveServer, api_token, start_server, stop_server

T0 = 1_795_000_000.123
ERROR = {
    "type": "HTTPError",
    "message": "503 from the CDN — réessayer",
    "stack": "Traceback…",
    "retryable": True,
}
# FastAPI's serialisation of the handler's ``dict[str, Any]`` before it answered with bytes of its own.
AS_FASTAPI_DID = TypeAdapter(dict[str, Any])


def ev(item_id: str, n: int, kind: str, at: float, **fields: Any) -> Event:
    return Event.model_validate(
        {"id": f"{item_id}#{n}", "type": kind, "item_id": item_id, "time": T0 + at, **fields}
    )


def story(item_id: str) -> list[Event]:
    """A video with everything an answer can hold: params and attrs, a retried download with progress,
    heartbeat, resources and an error, a stage running, two events at the same time, a control fact."""
    return [
        ev(item_id, 0, "item.created", 0, account="acct-7", scenario="reels", source="webhook",
           actor="ig-bot", trace_id="0af7651916cd43dd8448eb211c80319c",
           params={"caption": "héllo ✓", "n": [1, 2.5, None, True], "deep": {"x": 1e-7, "big": 1e16}},
           attrs={"lang": "es", "duration_s": 43.2}),
        ev(item_id, 1, "run.succeeded", 1.5, stage="webhook"),
        ev(item_id, 2, "run.enqueued", 2, stage="download"),
        ev(item_id, 3, "run.started", 2.25, stage="download", worker="cloudrun-02", revision="rev-0042"),
        ev(item_id, 4, "run.progress", 3, stage="download", progress=0.37, note="37 of 100 MB"),
        ev(item_id, 5, "run.failed", 4.001, stage="download", error=ERROR,
           resources={"cpu_s": 1.5, "mem_mb": 512}),
        ev(item_id, 6, "run.started", 9, stage="download", attempt=2, worker="cloudrun-03"),
        ev(item_id, 7, "run.heartbeat", 10, stage="download", attempt=2),
        ev(item_id, 8, "run.succeeded", 11.75, stage="download", attempt=2, resources={"cpu_s": 0.25}),
        ev(item_id, 9, "item.annotated", 11.75, attrs={"note": "same time as the success"}),
        ev(item_id, 10, "run.started", 12, stage="enqueue"),
    ]  # fmt: skip


def answer_before(db: Database, item_id: str, with_history: bool) -> bytes:
    """The answer as it was made before: Core queries, the same views, FastAPI's serialisation."""
    with db.reader.connect() as conn:
        row = conn.execute(select(schema.items).where(schema.items.c.item_id == item_id)).mappings().first()
        assert row is not None
        rows = conn.execute(select(schema.runs).where(schema.runs.c.item_id == item_id)).mappings()
        runs = sorted((run_from_row(r) for r in rows), key=lambda r: (r.began_at, r.attempt, r.run_id))
        view = item_view(item_from_row(row))
        view["runs"] = [run_view(run) for run in runs]
        if with_history:
            e = schema.events.c
            events = select(e.body, e.time, e.received_at, e.run_id).where(e.item_id == item_id)
            found = conn.execute(events.order_by(e.time, e.id)).mappings()
            view["history"] = [history_view(dict(r)) for r in found]
    return AS_FASTAPI_DID.dump_json(AS_FASTAPI_DID.validate_python(view))


def seed(db: Database, registry: PipelineRegistry) -> list[str]:
    ids = ["vid-full", "ig/2026/11/clip 1", "vidéo-日本-✓", "vid-new"]
    events = [e for item_id in ids[:3] for e in story(item_id)] + [ev("vid-new", 0, "item.created", 0)]
    ingest_now(db, registry, events)
    # A control fact with a reason (the ingest API refuses these: only guarded decisions write them).
    ingest_now(
        db, registry, [ev("vid-full", 11, "item.waiting", 13, stage="enqueue", note="concurrency 2/2")]
    )
    return ids


@pytest.mark.parametrize("with_history", [False, True], ids=["plain", "history"])
def test_the_answer_is_the_same_bytes_as_before(
    db: Database, registry: PipelineRegistry, with_history: bool
) -> None:
    for item_id in seed(db, registry):
        assert query.get_item_json(db, item_id, with_history=with_history) == answer_before(
            db, item_id, with_history
        ), item_id
    shown = query.get_item(db, "vid-full", with_history=True)
    assert (shown["status"], shown["stage"]) == ("waiting", "enqueue")
    assert shown["status_reason"] == "concurrency 2/2"
    assert [(r["stage"], r["attempt"], r["status"]) for r in shown["runs"]] == [
        ("webhook", 1, "succeeded"),
        ("download", 1, "failed"),
        ("download", 2, "succeeded"),
        ("enqueue", 1, "running"),
    ]
    assert [h["id"] for h in shown["history"]] == [f"vid-full#{n}" for n in range(12)]
    assert query.get_item(db, "vid-new")["runs"] == []


def test_an_unknown_item_is_not_found_and_the_pooled_connection_stays_clean(
    db: Database, registry: PipelineRegistry
) -> None:
    seed(db, registry)
    with pytest.raises(NotFound, match="no item 'nope'"):
        query.get_item_json(db, "nope", with_history=True)
    query.get_item(db, "vid-full", with_history=True)
    with db.reader.connect() as conn:  # the connection the reads used: no transaction, no autocommit left
        driver: Any = conn.connection.dbapi_connection
        assert driver.autocommit is False if db.is_postgres else not driver.in_transaction
        assert conn.execute(text("SELECT count(*) FROM items")).scalar() == 4  # Core's own BEGIN works


@pytest.mark.parametrize("broken", ["_ITEM_BY_ID", "_HISTORY"])
def test_a_database_error_is_sqlalchemys_and_leaves_the_connection_usable(
    db: Database, registry: PipelineRegistry, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    """On PostgreSQL the statements go out together (pipeline mode) and an error comes back when they
    are all answered, after ``driver.execute``: it must still be raised as SQLAlchemy's, as the API's
    error handlers expect (a lost connection: 503)."""
    seed(db, registry)
    monkeypatch.setattr(reads, broken, "SELECT no_such_column FROM items WHERE item_id = :item_id")
    with pytest.raises(DBAPIError, match="no_such_column"):
        query.get_item(db, "vid-full", with_history=True)
    monkeypatch.undo()
    assert query.get_item_json(db, "vid-full", with_history=True) == answer_before(db, "vid-full", True)


def test_values_orjson_refuses_are_answered_as_pydantic_made_them(monkeypatch: pytest.MonkeyPatch) -> None:
    view = {"item_id": "v", "params": {"huge": 2**70, "text": "✓"}, "runs": []}
    monkeypatch.setattr(query, "get_item", lambda *args, **kwargs: view)
    assert query.get_item_json(None, "v") == AS_FASTAPI_DID.dump_json(view)  # type: ignore[arg-type]


def test_over_http_the_answer_is_those_bytes_as_json_and_an_unknown_id_is_404(
    db: Database, registry: PipelineRegistry, live_server: LiveServer
) -> None:
    for item_id in seed(db, registry):
        for params in ({}, {"history": "1"}):
            answer = httpx.get(f"{live_server.url}/v1/items/{quote(item_id)}", params=params, timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"] == "application/json"
            assert answer.content == answer_before(db, item_id, bool(params)), (item_id, params)
    missing = httpx.get(f"{live_server.url}/v1/items/no-such-video", params={"history": "1"}, timeout=30)
    assert missing.status_code == 404
    assert missing.json() == {"error": "no item 'no-such-video'", "field": None}


def test_with_auth_on_an_item_needs_a_token_with_the_read_scope(
    db: Database, registry: PipelineRegistry, database_url: str, tmp_path: Path
) -> None:
    seed(db, registry)
    reader = api_token(database_url, "item-reader", "read")
    ingester = api_token(database_url, "item-ingester", "ingest")
    server = start_server(database_url, tmp_path / "auth.log", auth=True)
    try:
        url = f"{server.url}/v1/items/vid-full"
        none = httpx.get(url, timeout=30)
        assert (none.status_code, none.headers["www-authenticate"]) == (401, "Bearer")
        wrong = httpx.get(url, headers={"Authorization": f"Bearer {ingester}"}, timeout=30)
        assert wrong.status_code == 403 and "the 'read' scope" in wrong.json()["error"]
        right = httpx.get(url, params={"history": 1}, headers={"Authorization": f"Bearer {reader}"})
        assert right.status_code == 200 and right.content == answer_before(db, "vid-full", True)
    finally:
        stop_server(server)


def test_the_openapi_document_still_describes_the_answer(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'unused.db'}"))
    operation = app.openapi()["paths"]["/v1/items/{item_id}"]["get"]
    ok = operation["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["type"] == "object"
    assert "runs" in ok["description"] and "history" in ok["description"]
    assert set(operation["responses"]["404"]["content"]["application/json"]["schema"]["properties"]) == {
        "error",
        "field",
    }
    assert operation["security"] == [{"HTTPBearer": []}]
