"""Read use cases: one item with its story, a filtered page of items, and the per-stage summary."""

from __future__ import annotations

import base64
import json
import math
import time
from typing import Any

import orjson
import pydantic_core

from stagewatch.domain.events import iso
from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.domain.statuses import DONE, ItemStatus
from stagewatch.errors import InputError, NotFound
from stagewatch.service.views import history_view, item_view, run_view
from stagewatch.store import reads
from stagewatch.store.engine import Database
from stagewatch.store.reads import ItemFilter

MAX_PAGE = 500
# The columns of the summary, in the order people read a pipeline.
SUMMARY_STATUSES = (
    ItemStatus.QUEUED, ItemStatus.RUNNING, ItemStatus.WAITING, ItemStatus.FAILED,
    ItemStatus.DEAD_LETTERED, ItemStatus.CANCELLED, ItemStatus.READY_TO_PUBLISH, ItemStatus.PUBLISHED,
)  # fmt: skip


def get_item(db: Database, item_id: str, *, with_history: bool = False) -> dict[str, Any]:
    """The item, its runs in the order they began, and optionally its ordered history."""
    with reads.snapshot(db.reader) as conn:
        story = reads.item_story(conn, item_id, with_history=with_history)
    if story.item is None:
        raise NotFound(f"no item {item_id!r}")
    view = item_view(story.item)
    runs = sorted(story.runs, key=lambda r: (r.began_at, r.attempt, r.run_id))
    view["runs"] = [run_view(run) for run in runs]
    if with_history:
        view["history"] = [history_view(row) for row in story.history]
    return view


def get_item_json(db: Database, item_id: str, *, with_history: bool = False) -> bytes:
    """``get_item`` as ``GET /v1/items/{id}`` answers it: the JSON bytes FastAPI made of the dict
    (validating it, then pydantic-core's ``to_json``: ~16 µs for an item with its history), made by
    orjson (~4 µs) in the caller's thread. They are the same bytes; pydantic-core makes them when orjson
    refuses a value (an integer beyond 64 bits)."""
    view = get_item(db, item_id, with_history=with_history)
    try:
        return orjson.dumps(view)
    except orjson.JSONEncodeError:
        return pydantic_core.to_json(view)


def list_items(db: Database, where: ItemFilter, cursor: str | None, limit: int) -> dict[str, Any]:
    """A page of items, newest-updated first, and the cursor of the next page (None at the end)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InputError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    after = decode_cursor(cursor) if cursor else None
    with db.reader.connect() as conn:
        page = reads.items_page(conn, where, after, limit + 1)
    more, page = len(page) > limit, page[:limit]
    next_cursor = encode_cursor(page[-1].updated_at, page[-1].item_id) if more else None
    return {"items": [item_view(item) for item in page], "next_cursor": next_cursor}


def encode_cursor(updated_at: float, item_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([updated_at, item_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        updated_at, item_id = json.loads(raw)
        # Only what encode_cursor makes: [finite number, id]; a 2-character string would unpack too.
        if isinstance(updated_at, bool) or not isinstance(item_id, str):
            raise TypeError(cursor)
        if not math.isfinite(updated_at):
            raise ValueError(cursor)
        return float(updated_at), item_id
    except (ValueError, TypeError):
        raise InputError("cursor is not one this server issued", field="cursor") from None


def summary(db: Database, registry: PipelineRegistry, now: float | None = None) -> dict[str, Any]:
    """Per pipeline and stage: how many items are in each status, done, and the oldest queued age."""
    now = time.time() if now is None else now
    with db.reader.connect() as conn:
        counts = {(p, s, st): n for p, s, st, n in reads.stage_counts(conn)}
        pipelines = [
            _pipeline_summary(conn, registry, name, counts, now)
            for name in registry.names()
            if name == registry.default or any(key[0] == name for key in counts)
        ]
    return {"generated_at": iso(now), "pipelines": pipelines}


def _pipeline_summary(
    conn: Any, registry: PipelineRegistry, name: str, counts: dict[tuple[str, str, str], int], now: float
) -> dict[str, Any]:
    stages = []
    for stage in registry.require(name).stage_names:
        row: dict[str, Any] = {"stage": stage}
        row.update({status.value: counts.get((name, stage, status.value), 0) for status in SUMMARY_STATUSES})
        row[DONE] = counts.get((name, stage, DONE), 0)
        oldest = reads.oldest_since(conn, name, stage, ItemStatus.QUEUED.value) if row["queued"] else None
        row["oldest_queued_age_seconds"] = None if oldest is None else max(0.0, now - oldest)
        stages.append(row)
    total = sum(n for (p, _s, st), n in counts.items() if p == name and st != DONE)
    return {"pipeline": name, "items": total, "stages": stages}
