"""``GET /v1/items?prefix=``: the same page whichever way the database reads it. A prefix that many ids
share is read newest-first from ``ix_items_updated`` on SQLite, a narrow one from the id range."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, event

from stagewatch.domain.events import Event
from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.service.ingest import ingest_now
from stagewatch.store import reads
from stagewatch.store.engine import Database
from stagewatch.store.migrate import upgrade
from stagewatch.store.reads import ItemFilter, items_page

T0 = 1_795_000_000.0
VIDEOS = [f"vid-{n}" for n in range(1, 8)]


@pytest.fixture
def videos(db: Database, registry: PipelineRegistry, monkeypatch: pytest.MonkeyPatch) -> Database:
    """Seven ``vid-`` videos updated one second apart (vid-7 last), a ``clip-1``, and a low threshold."""
    upgrade(db)
    monkeypatch.setattr(reads, "BROAD_PREFIX", 3)
    events = [
        Event.model_validate({"id": f"e-{item}", "type": "item.created", "item_id": item, "time": T0 + n})
        for n, item in enumerate([*VIDEOS, "clip-1"])
    ]
    ingest_now(db, registry, events)
    return db


def _pages(db: Database, prefix: str, size: int) -> list[list[str]]:
    pages: list[list[str]] = []
    after: tuple[float, str] | None = None
    with db.reader.connect() as conn:
        while True:
            page = items_page(conn, ItemFilter(id_prefix=prefix), after, size)
            if not page:
                return pages
            pages.append([item.item_id for item in page])
            after = (page[-1].updated_at, page[-1].item_id)


def test_a_broad_prefix_pages_newest_first_through_every_match(videos: Database) -> None:
    assert _pages(videos, "vid-", 3) == [["vid-7", "vid-6", "vid-5"], ["vid-4", "vid-3", "vid-2"], ["vid-1"]]


def test_a_narrow_prefix_finds_only_its_own(videos: Database) -> None:
    assert _pages(videos, "vid-3", 3) == [["vid-3"]]
    assert _pages(videos, "clip", 3) == [["clip-1"]]
    assert _pages(videos, "vid-9", 3) == []


def _plan(db: Database, read: Callable[[Connection], Any]) -> str:
    """SQLite's plan for the last SELECT that ``read`` runs (the page itself, after any probe)."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, _context: Any, _many: bool) -> None:
        seen.append((statement, params))

    with db.reader.connect() as conn:
        event.listen(conn, "before_cursor_execute", capture)
        read(conn)
        event.remove(conn, "before_cursor_execute", capture)
        statement, params = seen[-1]
        return str(conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).fetchall())


@pytest.mark.parametrize(
    ("prefix", "index"),
    [("vid-", "ix_items_updated"), ("vid-3", "sqlite_autoindex_items_1")],
    ids=["broad-walks-the-newest-first-index", "narrow-reads-the-id-range"],
)
def test_sqlite_reads_a_prefix_the_cheap_way(videos: Database, prefix: str, index: str) -> None:
    if videos.is_postgres:
        pytest.skip("the plan checked is SQLite's; PostgreSQL's planner has statistics")
    plan = _plan(videos, lambda conn: items_page(conn, ItemFilter(id_prefix=prefix), None, 3))
    assert index in plan, plan
