"""The audit trail: one append-only row per control action, written in the action's own transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, insert

from stagewatch.store.schema import audit


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
