"""The audit trail: one append-only row per control action, written in the action's own transaction,
and the named queries that read it back newest first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, RowMapping, and_, insert, select, tuple_

from stagewatch.store.schema import audit


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did something, as the audit trail records it: a token's name (or ``cli:<user>``) and the
    address the request came from."""

    name: str
    source: str | None = None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What ``GET /v1/audit`` may filter on; ``None`` means any. Times are inclusive epoch seconds."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: float | None = None
    until: float | None = None


def record(
    conn: Connection,
    *,
    at: float,
    actor: str,
    action: str,
    target: str | None = None,
    params: Mapping[str, Any] | None = None,
    reason: str | None = None,
    source: str | None = None,
) -> None:
    conn.execute(
        insert(audit).values(
            at=at,
            actor=actor,
            action=action,
            target=target,
            params=dict(params) if params else None,
            reason=reason,
            source=source,
        )
    )


def record_many(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append several rows (each with every column but ``seq``) in one statement."""
    if rows:
        conn.execute(insert(audit), list(rows))


def page(
    conn: Connection, where: AuditFilter, after: tuple[float, int] | None, limit: int
) -> list[RowMapping]:
    """Rows newest first; ``after`` is the (at, seq) of the previous page's last row."""
    c = audit.c
    conditions = _conditions(where)
    if after is not None:
        conditions.append(tuple_(c.at, c.seq) < tuple_(*after))
    query = select(audit).where(and_(True, *conditions)).order_by(c.at.desc(), c.seq.desc()).limit(limit)
    return list(conn.execute(query).mappings())


def _conditions(where: AuditFilter) -> list[ColumnElement[bool]]:
    c = audit.c
    conditions: list[ColumnElement[bool]] = [
        column == value
        for column, value in ((c.actor, where.actor), (c.action, where.action), (c.target, where.target))
        if value is not None
    ]
    if where.since is not None:
        conditions.append(c.at >= where.since)
    if where.until is not None:
        conditions.append(c.at <= where.until)
    return conditions
