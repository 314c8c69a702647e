"""Named read queries. They use the projections and their indexes; none scans the event log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, select, tuple_

from stagewatch.domain.projection import ItemState, RunState
from stagewatch.store import schema
from stagewatch.store.rows import item_from_row, run_from_row


@dataclass(frozen=True, slots=True)
class ItemFilter:
    """What ``GET /v1/items`` and ``stagewatch items`` may filter on. ``None`` means any."""

    status: Sequence[str] | None = None
    stage: str | None = None
    account: str | None = None
    scenario: str | None = None
    pipeline: str | None = None
    updated_since: float | None = None
    id_prefix: str | None = None
    stuck: bool = False  # only items the watchdog marked stuck (a partial index holds just those)


def item(conn: Connection, item_id: str) -> ItemState | None:
    row = conn.execute(select(schema.items).where(schema.items.c.item_id == item_id)).mappings().first()
    return item_from_row(row) if row is not None else None


def runs_of(conn: Connection, item_id: str) -> list[RunState]:
    query = select(schema.runs).where(schema.runs.c.item_id == item_id)
    return [run_from_row(row) for row in conn.execute(query).mappings()]


def history(conn: Connection, item_id: str) -> list[dict[str, Any]]:
    """The item's events in the order they happened (client time, then id for ties)."""
    e = schema.events.c
    query = select(e.body, e.time, e.received_at, e.run_id).where(e.item_id == item_id).order_by(e.time, e.id)
    return [dict(row) for row in conn.execute(query).mappings()]


def items_page(
    conn: Connection, where: ItemFilter, after: tuple[float, str] | None, limit: int
) -> list[ItemState]:
    """Items newest-updated first; ``after`` is the (updated_at, item_id) of the previous page's last."""
    c = schema.items.c
    conditions = _conditions(where)
    if after is not None:
        conditions.append(tuple_(c.updated_at, c.item_id) < tuple_(*after))
    query = (
        select(schema.items)
        .where(and_(True, *conditions))
        .order_by(c.updated_at.desc(), c.item_id.desc())
        .limit(limit)
    )
    return [item_from_row(row) for row in conn.execute(query).mappings()]


def _conditions(where: ItemFilter) -> list[ColumnElement[bool]]:
    c = schema.items.c
    conditions: list[ColumnElement[bool]] = []
    if where.status:
        conditions.append(c.status.in_(list(where.status)))
    for column, value in (
        (c.stage, where.stage),
        (c.account, where.account),
        (c.scenario, where.scenario),
        (c.pipeline, where.pipeline),
    ):
        if value is not None:
            conditions.append(column == value)
    if where.updated_since is not None:
        conditions.append(c.updated_at >= where.updated_since)
    if where.id_prefix:
        conditions.extend(_prefix_range(c.item_id, where.id_prefix))
    if where.stuck:
        conditions.append(c.stuck.is_(True))  # spelled as the partial index ix_items_stuck is
    return conditions


def _prefix_range(column: Any, prefix: str) -> list[ColumnElement[bool]]:
    """``column`` starts with ``prefix``, as a range both databases answer from the primary key (ids
    compare by code point: SQLite's binary collation, PostgreSQL's "C"). LIKE could not use it."""
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return [column.startswith(prefix, autoescape=True)]
    following = last + 1 if not 0xD800 <= last + 1 <= 0xDFFF else 0xE000
    return [column >= prefix, column < prefix[:-1] + chr(following)]


def stage_counts(conn: Connection) -> list[tuple[str, str, str, int]]:
    sc = schema.stage_counts.c
    rows = conn.execute(select(sc.pipeline, sc.stage, sc.status, sc["count"]).where(sc["count"] != 0))
    return [(p, s, st, int(n)) for p, s, st, n in rows]


def oldest_since(conn: Connection, pipeline: str, stage: str, status: str) -> float | None:
    """When the longest-waiting item in this stage and status got there (an index lookup)."""
    c = schema.items.c
    query = select(func.min(c.status_since)).where(
        c.status == status, c.stage == stage, c.pipeline == pipeline
    )
    value = conn.execute(query).scalar()
    return float(value) if value is not None else None


def item_ids(conn: Connection, where: ItemFilter, limit: int) -> list[str]:
    """The ids of up to ``limit`` items matching ``where`` (for bulk actions), in id order."""
    c = schema.items.c
    query = select(c.item_id).where(and_(True, *_conditions(where))).order_by(c.item_id).limit(limit)
    return list(conn.execute(query).scalars())
