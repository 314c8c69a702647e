"""Operators' run-time changes to stages (``stage_overrides``): read by ``begin`` in its transaction,
written by the pause and limit actions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from stagewatch.domain.guards import StageOverride
from stagewatch.store.driver import upsert_insert
from stagewatch.store.schema import leases, stage_overrides

_o = stage_overrides.c


def override_of(conn: Connection, pipeline: str, stage: str) -> StageOverride | None:
    row = (
        conn.execute(select(stage_overrides).where(_o.pipeline == pipeline, _o.stage == stage))
        .mappings()
        .first()
    )
    if row is None or (not row["paused"] and row["max_running"] is None):
        return None
    return StageOverride(row["paused"], row["reason"], row["actor"], row["max_running"])


def stage_running(conn: Connection, pipeline: str, stage: str, now: float) -> int:
    """Live (unexpired) leases of the stage: the runs a cap counts."""
    query = select(func.count()).where(
        leases.c.pipeline == pipeline, leases.c.stage == stage, leases.c.expires_at > now
    )
    return int(conn.execute(query).scalar_one())


def set_override(conn: Connection, pipeline: str, stage: str, **values: Any) -> None:
    """Insert or change the stage's override; ``values`` among paused, reason, actor, max_running and
    updated_at (a new row starts unpaused and uncapped)."""
    row = {"pipeline": pipeline, "stage": stage, "paused": False, "max_running": None, **values}
    insert = upsert_insert(conn, stage_overrides)
    conn.execute(insert.values(row).on_conflict_do_update(index_elements=["pipeline", "stage"], set_=values))


def all_overrides(conn: Connection) -> list[dict[str, Any]]:
    query = select(stage_overrides).order_by(_o.pipeline, _o.stage)
    return [dict(row) for row in conn.execute(query).mappings()]
