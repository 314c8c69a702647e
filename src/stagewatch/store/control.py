"""The control plane's reads and writes: work rows, leases and their slots, rate hits, cancellations and
dead letters. Every function runs inside the caller's transaction.

Atomicity: on PostgreSQL the work row is locked (``FOR UPDATE``) so two begins of the same work queue up,
and every limit key is locked with a transaction-scoped advisory lock, in sorted order, before it is
counted, so two replicas can never both take the last slot. SQLite has one writer at a time (``BEGIN
IMMEDIATE``), which serialises all of this by itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, and_, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from stagewatch.domain.guards import Cancellation, Work, WorkState
from stagewatch.store.schema import (
    cancellations,
    dead_letters,
    items,
    lease_slots,
    leases,
    rate_hits,
    runs,
    work,
)

WorkId = tuple[str, str, str]  # (pipeline, stage, work_key)


def _insert(conn: Connection, table: Any) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _work_where(work_id: WorkId) -> Any:
    pipeline, stage, key = work_id
    return and_(work.c.pipeline == pipeline, work.c.stage == stage, work.c.work_key == key)


# --- work ----------------------------------------------------------------------------------------------


def lock_work(conn: Connection, work_id: WorkId, item_id: str, now: float) -> dict[str, Any]:
    """The work row, created idle if new, locked for the rest of the transaction."""
    pipeline, stage, key = work_id
    row = dict(
        pipeline=pipeline, stage=stage, work_key=key, item_id=item_id, state=WorkState.IDLE.value,
        attempts=0, duplicates=0, created_at=now, updated_at=now,
    )  # fmt: skip
    conn.execute(_insert(conn, work).values(**row).on_conflict_do_nothing())
    query = select(work).where(_work_where(work_id))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return dict(conn.execute(query).mappings().one())


def update_work(conn: Connection, work_id: WorkId, **values: Any) -> None:
    conn.execute(update(work).where(_work_where(work_id)).values(**values))


def work_of_run(conn: Connection, item_id: str, run_id: str) -> dict[str, Any] | None:
    """The work row whose current run is ``run_id``, locked."""
    query = select(work).where(work.c.item_id == item_id, work.c.run_id == run_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    found = conn.execute(query).mappings().first()
    return dict(found) if found is not None else None


def works_of_item(conn: Connection, item_id: str) -> list[dict[str, Any]]:
    query = select(work).where(work.c.item_id == item_id).order_by(work.c.created_at)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return [dict(row) for row in conn.execute(query).mappings()]


def work_snapshot(row: Mapping[str, Any], lease_live: bool) -> Work:
    return Work(
        state=WorkState(row["state"]),
        attempts=row["attempts"],
        run_id=row["run_id"],
        lease_live=lease_live,
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
    )


# --- leases and slots ----------------------------------------------------------------------------------


def lease(conn: Connection, run_id: str) -> dict[str, Any] | None:
    found = conn.execute(select(leases).where(leases.c.run_id == run_id)).mappings().first()
    return dict(found) if found is not None else None


def leases_of(conn: Connection, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    query = select(leases).where(leases.c.run_id.in_(list(run_ids)))
    return {row["run_id"]: dict(row) for row in conn.execute(query).mappings()}


def lock_keys(conn: Connection, keys: Iterable[str]) -> None:
    """Serialise every transaction that counts or takes these limit keys (PostgreSQL; see module doc)."""
    if conn.dialect.name != "postgresql":
        return
    for key in sorted(set(keys)):
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_id(key)})


def _lock_id(key: str) -> int:
    # A stable signed 64-bit id per key (Python's hash() differs between processes).
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def slot_use(conn: Connection, slot: str, now: float) -> int:
    """How many unexpired leases hold ``slot``: an expired lease no longer counts, reaped or not."""
    query = (
        select(func.count())
        .select_from(lease_slots.join(leases, lease_slots.c.run_id == leases.c.run_id))
        .where(lease_slots.c.slot == slot, leases.c.expires_at > now)
    )
    return int(conn.execute(query).scalar_one())


def rate_use(conn: Connection, slot: str, since: float) -> tuple[int, float | None]:
    """Runs started under ``slot`` after ``since``, and the earliest of those starts."""
    query = select(func.count(), func.min(rate_hits.c.at)).where(
        rate_hits.c.slot == slot, rate_hits.c.at > since
    )
    count, oldest = conn.execute(query).one()
    return int(count), oldest


def take_lease(
    conn: Connection, row: Mapping[str, Any], slots: Sequence[str], rate_slots: Sequence[str]
) -> None:
    conn.execute(leases.insert().values(**row))
    if slots:
        conn.execute(lease_slots.insert(), [{"slot": s, "run_id": row["run_id"]} for s in slots])
    if rate_slots:
        hits = [{"slot": s, "at": row["started_at"], "run_id": row["run_id"]} for s in rate_slots]
        conn.execute(rate_hits.insert(), hits)


def drop_lease(conn: Connection, run_id: str) -> bool:
    """Free the run's lease and slots; False if it held none (already completed or timed out)."""
    conn.execute(delete(lease_slots).where(lease_slots.c.run_id == run_id))
    return conn.execute(delete(leases).where(leases.c.run_id == run_id)).rowcount > 0


def beat(conn: Connection, run_id: str, now: float, timeout: float) -> None:
    conn.execute(
        update(leases)
        .where(leases.c.run_id == run_id)
        .values(heartbeat_at=now, expires_at=now + timeout, stuck=False)
    )


def request_stop(conn: Connection, run_id: str, reason: str) -> bool:
    """Ask a run to stop at its next heartbeat; the first reason given stays."""
    result = conn.execute(
        update(leases)
        .where(leases.c.run_id == run_id, leases.c.stop_reason.is_(None))
        .values(stop_reason=reason)
    )
    return result.rowcount > 0


def live_leases_of_items(conn: Connection, item_ids: Sequence[str]) -> list[dict[str, Any]]:
    query = select(leases).where(leases.c.item_id.in_(list(item_ids)))
    return [dict(row) for row in conn.execute(query).mappings()]


def prune_rate_hits(conn: Connection, before: float) -> int:
    return int(conn.execute(delete(rate_hits).where(rate_hits.c.at <= before)).rowcount)


# --- cancellations -------------------------------------------------------------------------------------


def active_cancellation(conn: Connection, item_id: str) -> Cancellation | None:
    query = select(cancellations).where(cancellations.c.item_id == item_id, cancellations.c.active)
    row = conn.execute(query).mappings().first()
    return Cancellation(row["reason"], row["actor"], row["at"]) if row is not None else None


def cancelled_among(conn: Connection, item_ids: Sequence[str]) -> dict[str, Cancellation]:
    query = select(cancellations).where(cancellations.c.item_id.in_(list(item_ids)), cancellations.c.active)
    return {
        row["item_id"]: Cancellation(row["reason"], row["actor"], row["at"])
        for row in conn.execute(query).mappings()
    }


def set_cancellation(conn: Connection, item_id: str, reason: str, actor: str, at: float) -> None:
    values = {"reason": reason, "actor": actor, "at": at, "active": True}
    statement = _insert(conn, cancellations).values(item_id=item_id, **values)
    conn.execute(statement.on_conflict_do_update(index_elements=["item_id"], set_=values))


def lift_cancellation(conn: Connection, item_id: str) -> bool:
    query = update(cancellations).where(cancellations.c.item_id == item_id, cancellations.c.active)
    return conn.execute(query.values(active=False)).rowcount > 0


# --- dead letters --------------------------------------------------------------------------------------


def add_dead_letter(conn: Connection, row: Mapping[str, Any]) -> None:
    """Enqueue a dead letter; a second open one for the same work is refused by a unique index, and
    ignored here, so it is enqueued exactly once however often it is decided."""
    conn.execute(
        _insert(conn, dead_letters)
        .values(status="open", replays=0, **row)
        .on_conflict_do_nothing(
            index_elements=["pipeline", "stage", "work_key"], index_where=dead_letters.c.status == "open"
        )
    )


def resolve_dead_letters(
    conn: Connection, ids: Sequence[int], status: str, actor: str, at: float
) -> list[dict[str, Any]]:
    """Mark open dead letters replayed or discarded; return the rows that were open."""
    query = select(dead_letters).where(dead_letters.c.id.in_(list(ids)), dead_letters.c.status == "open")
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    rows = [dict(row) for row in conn.execute(query).mappings()]
    if rows:
        replays = dead_letters.c.replays + (1 if status == "replayed" else 0)
        conn.execute(
            update(dead_letters)
            .where(dead_letters.c.id.in_([row["id"] for row in rows]))
            .values(status=status, resolved_at=at, resolved_by=actor, replays=replays)
        )
    return rows


# --- what the projection says ----------------------------------------------------------------------------


def item_control(conn: Connection, item_id: str) -> dict[str, Any] | None:
    """The item's latest control fact (``items.control``), if any."""
    value = conn.execute(select(items.c.control).where(items.c.item_id == item_id)).scalar_one_or_none()
    return dict(value) if isinstance(value, dict) else None


def run_status(conn: Connection, run_id: str) -> str | None:
    """The projected status of a run, None if no event named it yet."""
    return conn.execute(select(runs.c.status).where(runs.c.run_id == run_id)).scalar_one_or_none()


def run_identity(conn: Connection, run_id: str) -> dict[str, Any] | None:
    """Item, stage, attempt, status and pipeline of a projected run."""
    query = (
        select(runs.c.item_id, runs.c.stage, runs.c.attempt, runs.c.status, items.c.pipeline)
        .select_from(runs.join(items, runs.c.item_id == items.c.item_id))
        .where(runs.c.run_id == run_id)
    )
    found = conn.execute(query).mappings().first()
    return dict(found) if found is not None else None


# --- the dead-letter queue, read -------------------------------------------------------------------------


def dead_letter_page(
    conn: Connection,
    *,
    status: str | None = "open",
    stage: str | None = None,
    item_id: str | None = None,
    since: float | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Dead letters, newest first; ``before_id`` continues a page."""
    d = dead_letters.c
    conditions = [
        condition
        for condition in (
            d.status == status if status else None,
            d.stage == stage if stage else None,
            d.item_id == item_id if item_id else None,
            d.created_at >= since if since is not None else None,
            d.id < before_id if before_id is not None else None,
        )
        if condition is not None
    ]
    query = select(dead_letters).where(*conditions).order_by(d.id.desc()).limit(limit)
    return [dict(row) for row in conn.execute(query).mappings()]


def dead_letter_ids(conn: Connection, **where: Any) -> list[int]:
    """Every open dead letter matching the filters of ``dead_letter_page``."""
    ids: list[int] = []
    before: int | None = None
    while True:
        page = dead_letter_page(conn, before_id=before, limit=1000, **where)
        ids.extend(int(row["id"]) for row in page)
        if len(page) < 1000:
            return ids
        before = ids[-1]


# --- what the watchdog looks for -------------------------------------------------------------------------


def expired_leases(conn: Connection, now: float, limit: int = 500) -> list[dict[str, Any]]:
    query = select(leases).where(leases.c.expires_at <= now).order_by(leases.c.expires_at).limit(limit)
    return [dict(row) for row in conn.execute(query).mappings()]


def all_leases(conn: Connection) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(select(leases)).mappings()]


def mark_lease_stuck(conn: Connection, run_id: str) -> None:
    conn.execute(update(leases).where(leases.c.run_id == run_id).values(stuck=True))


def mark_item_stuck(conn: Connection, item_id: str, reason: str) -> None:
    conn.execute(update(items).where(items.c.item_id == item_id).values(stuck=True, stuck_reason=reason))


def overstaying_items(
    conn: Connection, pipeline: str, stage: str, status: str, before: float, limit: int = 500
) -> list[dict[str, Any]]:
    """Items in ``status`` at ``stage`` since before ``before`` not yet marked stuck (the index on
    status, stage, status_since makes this a range scan)."""
    i = items.c
    query = (
        select(i.item_id, i.status_since)
        .where(
            i.status == status, i.stage == stage, i.status_since < before, i.pipeline == pipeline, ~i.stuck
        )
        .limit(limit)
    )
    return [dict(row) for row in conn.execute(query).mappings()]
