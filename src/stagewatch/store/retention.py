"""Named queries for retention: deleting the events of finished items, a few items at a time, and the
advisory lock that lets one replica at a time do it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Connection, delete, exists, func, select, tuple_

from stagewatch.store import driver, schema
from stagewatch.store.engine import Database

# pg_advisory_lock key of the retention loop: the bytes "stgwRETN" read as a signed 64-bit number.
RETENTION_LOCK = 0x73746777_5245544E


@contextmanager
def leader_lock(db: Database, key: int = RETENTION_LOCK) -> Iterator[bool]:
    """Yield whether this process may run the job now. On PostgreSQL, replicas sharing the database
    take a session advisory lock, and only the one that gets it runs; SQLite has one server."""
    if not db.is_postgres:
        yield True
        return
    with db.writer.connect() as conn:
        got = bool(conn.execute(select(func.pg_try_advisory_lock(key))).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(select(func.pg_advisory_unlock(key)))
                conn.commit()


def finished_items(
    conn: Connection, status: str, cutoff: float, after: tuple[float, str] | None, limit: int
) -> list[tuple[float, str]]:
    """Up to ``limit`` (updated_at, item_id) of items in ``status`` not updated since ``cutoff`` that
    still have events, in index order after ``after`` (the last pair of the previous chunk)."""
    c = schema.items.c
    has_events = exists().where(schema.events.c.item_id == c.item_id)
    query = select(c.updated_at, c.item_id).where(c.status == status, c.updated_at < cutoff, has_events)
    if after is not None:
        query = query.where(tuple_(c.updated_at, c.item_id) > tuple_(*after))
    query = query.order_by(c.updated_at, c.item_id).limit(limit)
    return [(float(at), str(item_id)) for at, item_id in conn.execute(query)]


def delete_events_of(
    conn: Connection, item_ids: Sequence[str], statuses: Sequence[str], cutoff: float
) -> int:
    """Delete the events of those of ``item_ids`` that are still in one of ``statuses`` and not updated
    since ``cutoff``. On PostgreSQL the items are locked first, in id order as ingest locks them, so an
    event arriving meanwhile waits and then finds its item's history as it was left."""
    c = schema.items.c
    still = select(c.item_id).where(
        c.item_id.in_(list(item_ids)), c.status.in_(list(statuses)), c.updated_at < cutoff
    )
    if driver.is_postgres(conn):
        still = still.order_by(c.item_id).with_for_update()
    ids = list(conn.execute(still).scalars())
    if not ids:
        return 0
    result = conn.execute(delete(schema.events).where(schema.events.c.item_id.in_(ids)))
    return int(result.rowcount)
