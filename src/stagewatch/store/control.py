"""The control plane's reads and writes: work rows, leases and their slots, rate hits, cancellations and
dead letters. Every function runs inside the caller's transaction.

Atomicity: on PostgreSQL the work row is locked (``FOR UPDATE``) so two begins of the same work queue up,
and every limit key is locked with a transaction-scoped advisory lock, in sorted order, before it is
counted, so two replicas can never both take the last slot. SQLite has one writer at a time (``BEGIN
IMMEDIATE``), which serialises all of this by itself.

Speed: a decision (begin, heartbeat, complete) runs about a dozen statements, so those are sent
straight to the driver (``store.driver``), skipping ~0.4 ms of Core per statement. The rarer statements
of operators and the watchdog stay in Core.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, delete, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite

from stagewatch.domain.guards import Cancellation, Work, WorkState
from stagewatch.store.driver import Row, Shape, any_of, execute, first, is_postgres, json_value
from stagewatch.store.schema import cancellations, dead_letters, items, leases, rate_hits, work

WorkId = tuple[str, str, str]  # (pipeline, stage, work_key)

_WORK, _LEASE = Shape.of(work), Shape.of(leases)


def _insert(conn: Connection, table: Any) -> Any:
    return (postgresql.insert if is_postgres(conn) else sqlite.insert)(table)


# --- work ----------------------------------------------------------------------------------------------

_CREATE_WORK = (
    "INSERT INTO work (pipeline, stage, work_key, item_id, state, attempts, duplicates, created_at, "
    "updated_at) VALUES (:pipeline, :stage, :work_key, :item_id, :state, 0, 0, :now, :now) "
    f"ON CONFLICT DO NOTHING RETURNING {_WORK.columns}"
)
_WORK_BY_ID = (
    f"SELECT {_WORK.columns} FROM work WHERE pipeline = :pipeline AND stage = :stage AND work_key = :work_key"
)


def lock_work(conn: Connection, work_id: WorkId, item_id: str, now: float) -> Row:
    """The work row, created idle if new, locked for the rest of the transaction (on PostgreSQL a row
    this transaction inserted is its own until it commits; an existing one is read ``FOR UPDATE``)."""
    pipeline, stage, key = work_id
    where = {"pipeline": pipeline, "stage": stage, "work_key": key}
    new = {**where, "item_id": item_id, "state": WorkState.IDLE.value, "now": now}
    row = first(conn, _WORK, _CREATE_WORK, new) or first(conn, _WORK, _WORK_BY_ID + _for_update(conn), where)
    assert row is not None, "inserted, or there already"
    return row


def _for_update(conn: Connection) -> str:
    return " FOR UPDATE" if is_postgres(conn) else ""


@functools.lru_cache(maxsize=64)
def _update_work_sql(names: tuple[str, ...]) -> str:
    assignments = ", ".join(f"{name} = :set_{name}" for name in names)
    return f"UPDATE work SET {assignments} WHERE {_WORK_BY_ID.split(' WHERE ', 1)[1]}"


def update_work(conn: Connection, work_id: WorkId, **values: Any) -> None:
    pipeline, stage, key = work_id
    params = {f"set_{name}": json_value(v) if name in _WORK.json_names else v for name, v in values.items()}
    params.update(pipeline=pipeline, stage=stage, work_key=key)
    execute(conn, _update_work_sql(tuple(values)), params)


_WORK_OF_RUN = f"SELECT {_WORK.columns} FROM work WHERE item_id = :item_id AND run_id = :run_id"


def work_of_run(conn: Connection, item_id: str, run_id: str) -> Row | None:
    """The work row whose current run is ``run_id``, locked."""
    return first(conn, _WORK, _WORK_OF_RUN + _for_update(conn), {"item_id": item_id, "run_id": run_id})


def works_of_item(conn: Connection, item_id: str) -> list[dict[str, Any]]:
    query = select(work).where(work.c.item_id == item_id).order_by(work.c.created_at)
    if is_postgres(conn):
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

_LEASE_BY_RUN = f"SELECT {_LEASE.columns} FROM leases WHERE run_id = :run_id"


def lease(conn: Connection, run_id: str) -> Row | None:
    return first(conn, _LEASE, _LEASE_BY_RUN, {"run_id": run_id})


def leases_of(conn: Connection, run_ids: Sequence[str]) -> dict[str, Row]:
    if not run_ids:
        return {}
    where, params = any_of(conn, "run_id", run_ids)
    rows = execute(conn, f"SELECT {_LEASE.columns} FROM leases WHERE {where}", params).fetchall()
    return {lease["run_id"]: lease for lease in (_LEASE.row(conn, row) for row in rows)}


def lock_keys(conn: Connection, keys: Iterable[str]) -> None:
    """Serialise every transaction that counts or takes these limit keys (PostgreSQL; see module doc)."""
    if not is_postgres(conn):
        return
    for key in sorted(set(keys)):
        execute(conn, "SELECT pg_advisory_xact_lock(:k)", {"k": _lock_id(key)}).fetchall()


def _lock_id(key: str) -> int:
    # A stable signed 64-bit id per key (Python's hash() differs between processes).
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


_SLOT_USE = (
    "SELECT count(*) FROM lease_slots JOIN leases ON lease_slots.run_id = leases.run_id "
    "WHERE lease_slots.slot = :slot AND leases.expires_at > :now"
)


def slot_use(conn: Connection, slot: str, now: float) -> int:
    """How many unexpired leases hold ``slot``: an expired lease no longer counts, reaped or not."""
    return int(execute(conn, _SLOT_USE, {"slot": slot, "now": now}).fetchall()[0][0])


_RATE_USE = "SELECT count(*), min(at) FROM rate_hits WHERE slot = :slot AND at > :since"


def rate_use(conn: Connection, slot: str, since: float) -> tuple[int, float | None]:
    """Runs started under ``slot`` after ``since``, and the earliest of those starts."""
    count, oldest = execute(conn, _RATE_USE, {"slot": slot, "since": since}).fetchall()[0]
    return int(count), oldest


_TAKE_LEASE = f"INSERT INTO leases ({_LEASE.columns}) VALUES ({', '.join(':' + n for n in _LEASE.names)})"
_TAKE_SLOT = "INSERT INTO lease_slots (slot, run_id) VALUES (:slot, :run_id)"
_HIT_RATE = "INSERT INTO rate_hits (slot, at, run_id) VALUES (:slot, :at, :run_id)"


def take_lease(
    conn: Connection, row: Mapping[str, Any], slots: Sequence[str], rate_slots: Sequence[str]
) -> None:
    execute(conn, _TAKE_LEASE, row)
    run_id = row["run_id"]
    if slots:
        execute(conn, _TAKE_SLOT, [{"slot": s, "run_id": run_id} for s in slots], many=True)
    if rate_slots:
        hits = [{"slot": s, "at": row["started_at"], "run_id": run_id} for s in rate_slots]
        execute(conn, _HIT_RATE, hits, many=True)


def drop_lease(conn: Connection, run_id: str) -> bool:
    """Free the run's lease and slots; False if it held none (already completed or timed out)."""
    return release(conn, run_id) is not None


_RELEASE = f"DELETE FROM leases WHERE run_id = :run_id RETURNING {_LEASE.columns}"


def release(conn: Connection, run_id: str) -> Row | None:
    """Free the run's lease and slots; return the lease as it was (None if it held none)."""
    execute(conn, "DELETE FROM lease_slots WHERE run_id = :run_id", {"run_id": run_id})
    return first(conn, _LEASE, _RELEASE, {"run_id": run_id})


_BEAT = (
    "UPDATE leases SET heartbeat_at = :now, expires_at = :expires_at, stuck = :stuck WHERE run_id = :run_id"
)


def beat(conn: Connection, run_id: str, now: float, timeout: float) -> None:
    execute(conn, _BEAT, {"now": now, "expires_at": now + timeout, "stuck": False, "run_id": run_id})


_REQUEST_STOP = "UPDATE leases SET stop_reason = :reason WHERE run_id = :run_id AND stop_reason IS NULL"


def request_stop(conn: Connection, run_id: str, reason: str) -> bool:
    """Ask a run to stop at its next heartbeat; the first reason given stays."""
    return int(execute(conn, _REQUEST_STOP, {"reason": reason, "run_id": run_id}).rowcount) > 0


def live_leases_of_items(conn: Connection, item_ids: Sequence[str]) -> list[dict[str, Any]]:
    query = select(leases).where(leases.c.item_id.in_(list(item_ids)))
    return [dict(row) for row in conn.execute(query).mappings()]


def prune_rate_hits(conn: Connection, before: float) -> int:
    return int(conn.execute(delete(rate_hits).where(rate_hits.c.at <= before)).rowcount)


# --- cancellations -------------------------------------------------------------------------------------

_CANCELLED = "SELECT item_id, reason, actor, at FROM cancellations WHERE {where} AND active"


def active_cancellation(conn: Connection, item_id: str) -> Cancellation | None:
    return cancelled_among(conn, [item_id]).get(item_id)


def cancelled_among(conn: Connection, item_ids: Sequence[str]) -> dict[str, Cancellation]:
    if not item_ids:
        return {}
    where, params = any_of(conn, "item_id", item_ids)
    rows = execute(conn, _CANCELLED.format(where=where), params).fetchall()
    return {item_id: Cancellation(reason, actor, at) for item_id, reason, actor, at in rows}


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
    # The partial index's condition is spelled as a literal, not a bound parameter: once psycopg prepares
    # the statement (after 5 runs on a connection), PostgreSQL cannot match "status = $1" to the index.
    open_only = dead_letters.c.status == literal_column("'open'")
    conn.execute(
        _insert(conn, dead_letters)
        .values(status="open", replays=0, **row)
        .on_conflict_do_nothing(index_elements=["pipeline", "stage", "work_key"], index_where=open_only)
    )


def resolve_dead_letters(
    conn: Connection, ids: Sequence[int], status: str, actor: str, at: float
) -> list[dict[str, Any]]:
    """Mark open dead letters replayed or discarded; return the rows that were open."""
    query = select(dead_letters).where(dead_letters.c.id.in_(list(ids)), dead_letters.c.status == "open")
    if is_postgres(conn):
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


def item_control(conn: Connection, item_id: str) -> Row | None:
    """The item's latest control fact (``items.control``), if any."""
    found = execute(
        conn, "SELECT control FROM items WHERE item_id = :item_id", {"item_id": item_id}
    ).fetchall()
    value = found[0][0] if found else None
    if isinstance(value, str | bytes) and not is_postgres(conn):
        value = orjson.loads(value)
    return dict(value) if isinstance(value, dict) else None


def run_status(conn: Connection, run_id: str) -> str | None:
    """The projected status of a run, None if no event named it yet."""
    return run_statuses(conn, [run_id]).get(run_id)


def run_statuses(conn: Connection, run_ids: Sequence[str]) -> dict[str, str]:
    """The projected status of each of ``run_ids`` that some event named."""
    where, params = any_of(conn, "run_id", run_ids)
    return dict(execute(conn, f"SELECT run_id, status FROM runs WHERE {where}", params).fetchall())


def run_item(conn: Connection, run_id: str) -> str | None:
    """The item a projected run is filed under."""
    found = execute(conn, "SELECT item_id FROM runs WHERE run_id = :run_id", {"run_id": run_id}).fetchall()
    return str(found[0][0]) if found else None


_RUN_IDENTITY = (
    "SELECT runs.item_id, runs.stage, runs.attempt, runs.status, items.pipeline "
    "FROM runs JOIN items ON runs.item_id = items.item_id WHERE runs.run_id = :run_id"
)


def run_identity(conn: Connection, run_id: str) -> Row | None:
    """Item, stage, attempt, status and pipeline of a projected run."""
    found = execute(conn, _RUN_IDENTITY, {"run_id": run_id}).fetchall()
    names = ("item_id", "stage", "attempt", "status", "pipeline")
    return dict(zip(names, found[0], strict=True)) if found else None


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
    """Every lease, by item: the watchdog marks items stuck in this order, the order ingest locks them."""
    query = select(leases).order_by(leases.c.item_id, leases.c.run_id)
    return [dict(row) for row in conn.execute(query).mappings()]


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
