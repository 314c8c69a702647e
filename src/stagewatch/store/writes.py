"""Named write operations used by ingest, all inside one caller-owned transaction."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection

from stagewatch.domain.projection import ItemState, RunState
from stagewatch.store import driver, schema
from stagewatch.store.rawsql import (
    column_where_in,
    insert_missing_postgres,
    insert_new_postgres,
    select_where_in,
    upsert_objects_postgres,
    upsert_objects_sqlite,
)
from stagewatch.store.rows import item_from_row, run_from_row

# The events table's columns as ingest writes them (``seq`` is the database's); see ``EventValues``.
EVENT_COLUMNS = (
    "id",
    "type",
    "item_id",
    "run_id",
    "pipeline",
    "stage",
    "time",
    "received_at",
    "trace_id",
    "body",
)
# One event's values in ``EVENT_COLUMNS`` order, ``body`` already JSON text.
EventValues = tuple[Any, ...]

_INSERT_EVENTS_SQLITE = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
)


def insert_new_events(conn: Connection, rows: Sequence[EventValues]) -> set[str]:
    """Append events (unique ids), skipping ids already in the log. Returns the ids that were new."""
    if not rows:
        return set()
    if driver.is_postgres(conn):
        return insert_new_postgres(conn, schema.events, EVENT_COLUMNS, rows, "id")
    # SQLite: the writer holds the database's write lock from BEGIN IMMEDIATE, so ids not stored now
    # cannot be stored by anyone else before this transaction's insert.
    stored = set(column_where_in(conn, schema.events, "id", "id", [row[0] for row in rows]))
    new = [row for row in rows if row[0] not in stored]
    driver.execute(conn, _INSERT_EVENTS_SQLITE, new, many=True)
    return {row[0] for row in new}


def lock_items(conn: Connection, placeholders: Iterable[dict[str, Any]]) -> dict[str, ItemState]:
    """Load the items about to change, locked against concurrent writers.

    On PostgreSQL a missing row cannot be locked, so an empty placeholder is inserted first (a row with
    ``event_count`` 0 is treated as new). Rows are touched in id order so two replicas never deadlock.
    SQLite has one writer at a time, so a plain read is enough there.
    """
    ordered = sorted(placeholders, key=lambda row: row["item_id"])
    ids = [row["item_id"] for row in ordered]
    suffix = ""
    if driver.is_postgres(conn):
        insert_missing_postgres(conn, schema.items, ordered, "item_id")
        suffix = "ORDER BY item_id FOR UPDATE"
    found = (
        item_from_row(row) for row in select_where_in(conn, schema.items, [("item_id", ids)], suffix=suffix)
    )
    return {item.item_id: item for item in found if item.event_count > 0}


def run_owners(conn: Connection, run_ids: Iterable[str]) -> set[str]:
    """The items that the stored runs among ``run_ids`` are filed under."""
    return set(column_where_in(conn, schema.runs, "item_id", "run_id", list(run_ids)))


def load_runs(conn: Connection, item_ids: Iterable[str], run_ids: Iterable[str]) -> dict[str, RunState]:
    """Every run of these items, and any of these runs even if filed under another item."""
    conditions = [("item_id", list(item_ids)), ("run_id", list(run_ids))]
    return {row["run_id"]: run_from_row(row) for row in select_where_in(conn, schema.runs, conditions)}


def upsert_runs(conn: Connection, runs: Iterable[RunState]) -> None:
    if not driver.is_postgres(conn):
        upsert_objects_sqlite(conn, schema.runs, runs, "run_id")
        return
    upsert_objects_postgres(conn, schema.runs, sorted(runs, key=lambda r: r.run_id), "run_id")


def upsert_items(conn: Connection, items: Iterable[ItemState]) -> None:
    if not driver.is_postgres(conn):
        upsert_objects_sqlite(conn, schema.items, items, "item_id")
        return
    # Key order, so two replicas locking the same rows never wait on each other in a cycle.
    upsert_objects_postgres(conn, schema.items, sorted(items, key=lambda i: i.item_id), "item_id")


def add_stage_counts(conn: Connection, deltas: Counter[tuple[str, str, str]]) -> None:
    """Apply count changes per (pipeline, stage, status), in key order to avoid lock cycles."""
    rows = [
        {"pipeline": p, "stage": s, "status": st, "count": n}
        for (p, s, st), n in sorted(deltas.items())
        if n != 0
    ]
    if not rows:
        return
    stmt = driver.upsert_insert(conn, schema.stage_counts)
    counter = schema.stage_counts.c.count
    upsert = stmt.on_conflict_do_update(
        index_elements=["pipeline", "stage", "status"], set_={"count": counter + stmt.excluded["count"]}
    )
    conn.execute(upsert, rows)
