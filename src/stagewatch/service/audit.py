"""Reading the audit trail (filters, a page newest first with a cursor) and the row that records an
item's creation. Control actions write their own rows with ``stagewatch.store.audit.record``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stagewatch.domain.events import Event, iso
from stagewatch.errors import InputError
from stagewatch.service.cursors import decode_cursor, encode_cursor
from stagewatch.service.time_bounds import time_bound
from stagewatch.store import audit as audit_store
from stagewatch.store.audit import Actor, AuditFilter
from stagewatch.store.engine import Database

MAX_PAGE = 1000
ITEM_CREATE = "item.create"


def audit_filter(
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> AuditFilter:
    """The filter from query parameters; ``since``/``until`` are epoch seconds or ISO 8601."""
    return AuditFilter(
        actor=actor or None,
        action=action or None,
        target=target or None,
        since=time_bound(since, "since"),
        until=time_bound(until, "until"),
    )


def audit_page(
    db: Database, where: AuditFilter, cursor: str | None = None, limit: int = 100
) -> dict[str, Any]:
    """A page of audit rows, newest first, and the cursor of the next page (None at the end)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InputError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    after = decode_cursor(cursor) if cursor else None
    with db.reader.connect() as conn:
        rows = audit_store.page(conn, where, after, limit + 1)
    more, rows = len(rows) > limit, rows[:limit]
    next_cursor = encode_cursor(rows[-1]["at"], rows[-1]["seq"]) if more else None
    return {"audit": [audit_view(row) for row in rows], "next_cursor": next_cursor}


def audit_view(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "seq": row["seq"],
        "at": iso(row["at"]),
        "actor": row["actor"],
        "action": row["action"],
        "target": row["target"],
        "params": row["params"],
        "reason": row["reason"],
        "source": row["source"],
    }


def item_created_row(event: Event, actor: Actor, at: float) -> dict[str, Any]:
    """The audit row for an item created by ``event`` (an ``item.created`` event) sent by ``actor``."""
    fields = {"params": event.params, "source": event.source, "account": event.account}
    return {
        "at": at,
        "actor": actor.name,
        "action": ITEM_CREATE,
        "target": event.item_id,
        "params": {name: value for name, value in fields.items() if value is not None} or None,
        "reason": None,
        "source": actor.source,
    }
