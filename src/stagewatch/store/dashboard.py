"""The dashboard's read queries: throughput and failures per stage over a time window, stuck items per
stage, the runs running now with their leases, failures grouped by fingerprint, and an item's control
rows. All run on the projections and their indexes (migration 0005 adds the ones these need); none reads
the event log. Every function runs inside the caller's connection and returns plain rows.

Time buckets are computed in SQL (``bucket_of``) so a busy hour comes back as a few dozen grouped rows
instead of tens of thousands of runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    RowMapping,
    Select,
    and_,
    cast,
    func,
    literal,
    literal_column,
    select,
    text,
)

from stagewatch.domain.statuses import RunStatus
from stagewatch.store.driver import is_postgres
from stagewatch.store.schema import items, leases, runs, work

# Run statuses that count as a failed attempt on the dashboard (a cancel is an operator's decision).
ERROR_STATUSES = (RunStatus.FAILED.value, RunStatus.TIMED_OUT.value)


def bucket_of(conn: Connection, column: Any, start: float, width: float) -> ColumnElement[int]:
    """The 0-based index of the ``width``-second bucket from ``start`` that ``column`` falls in (for
    values at or after ``start``). PostgreSQL rounds a float cast to integer, so it floors first; SQLite's
    cast truncates, which is the floor for the non-negative values asked here, and ``floor`` is missing
    from SQLite builds without the math functions."""
    offset = (column - literal(start)) / literal(width)
    if is_postgres(conn):
        return cast(func.floor(offset), Integer)
    return cast(offset, Integer)


# --- throughput and stuck counts per stage --------------------------------------------------------------


def finished_by_bucket(
    conn: Connection, start: float, end: float, width: float, *, by_pipeline: bool = False
) -> list[tuple[str | None, str, str, int, int]]:
    """Runs that ended in ``[start, end]``: (pipeline, stage, status, bucket, count). The pipeline is
    None unless ``by_pipeline``: runs do not record it, so naming it costs a join with ``items`` per run,
    needed only when two pipelines share a stage name. Served by ``ix_runs_ended`` (ended_at, stage,
    status) alone when not joined."""
    r = runs.c
    bucket = bucket_of(conn, r.ended_at, start, width).label("bucket")
    keys: list[Any] = [items.c.pipeline] if by_pipeline else []
    keys += [r.stage, r.status, bucket]
    query = select(*keys, func.count()).where(r.ended_at >= start, r.ended_at <= end).group_by(*keys)
    if by_pipeline:
        query = query.join_from(runs, items, items.c.item_id == r.item_id)
    rows = [tuple(row) for row in conn.execute(query)]
    if not by_pipeline:
        rows = [(None, *row) for row in rows]
    return [(p, s, st, int(b), int(n)) for p, s, st, b, n in rows]


def stuck_counts(conn: Connection) -> dict[tuple[str, str | None], int]:
    """How many items the watchdog marked stuck, per (pipeline, stage): a scan of the partial index
    ``ix_items_stuck``, which holds only the stuck items."""
    i = items.c
    query = select(i.pipeline, i.stage, func.count()).where(i.stuck.is_(True)).group_by(i.pipeline, i.stage)
    return {(p, s): int(n) for p, s, n in conn.execute(query)}


# --- runs in flight -------------------------------------------------------------------------------------

_IN_FLIGHT_COLUMNS = (
    runs.c.run_id, runs.c.item_id, runs.c.stage, runs.c.attempt, runs.c.status, runs.c.started_at,
    runs.c.enqueued_at, runs.c.heartbeat_at, runs.c.progress, runs.c.progress_note, runs.c.worker,
    runs.c.revision, runs.c.resources, items.c.pipeline, items.c.account, items.c.scenario,
    leases.c.run_id.label("lease_run_id"), leases.c.started_at.label("lease_started_at"),
    leases.c.heartbeat_at.label("lease_heartbeat_at"), leases.c.expires_at.label("lease_expires_at"),
    leases.c.deadline.label("lease_deadline"), leases.c.stop_reason.label("lease_stop_reason"),
    leases.c.stuck.label("lease_stuck"), leases.c.worker.label("lease_worker"),
)  # fmt: skip


# Spelled with the literal, not a bound parameter, so SQLite can match it to the partial index
# ``ix_runs_running`` (it cannot see a parameter's value when it plans).
_RUNNING = runs.c.status == literal_column("'running'")


def _in_flight_query(*, from_leases: bool = False) -> Select[Any]:
    """Runs with their item's pipeline and account (runs do not record them) and their lease. A run may
    be running without a lease (a worker that only sends events), hence the outer join, unless only runs
    with a lease are wanted: then the (small) ``leases`` table leads."""
    query = select(*_IN_FLIGHT_COLUMNS)
    if from_leases:
        query = query.select_from(leases).join(runs, runs.c.run_id == leases.c.run_id)
    else:
        query = query.select_from(runs).outerjoin(leases, leases.c.run_id == runs.c.run_id)
    return query.join(items, items.c.item_id == runs.c.item_id)


def _still_running(rows: Iterable[RowMapping]) -> list[dict[str, Any]]:
    # Filtered here rather than in SQL: given ``status = 'running'``, SQLite (without statistics) walks
    # ``ix_runs_status_stage`` over every running run instead of the few rows the query leads with.
    return [dict(row) for row in rows if row["status"] == RunStatus.RUNNING.value]


# SQLite without statistics (no ANALYZE) prefers the equality on ``ix_runs_status_stage`` and then sorts
# every running run; ``INDEXED BY`` names the partial index, whose order is already the one wanted.
# PostgreSQL's planner, which has statistics, picks it by itself.
_OLDEST_RUNNING = (
    "SELECT run_id FROM runs{hint} WHERE status = 'running' ORDER BY started_at, run_id LIMIT :limit"
)


def _oldest_running(conn: Connection, limit: int) -> list[str]:
    hint = "" if is_postgres(conn) else " INDEXED BY ix_runs_running"
    return list(conn.execute(text(_OLDEST_RUNNING.format(hint=hint)), {"limit": limit}).scalars())


def running_runs(conn: Connection, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` running runs, longest running first: the first entries of ``ix_runs_running``,
    then joined (joining first would join every running run before the sort)."""
    ids = _oldest_running(conn, limit)
    if not ids:
        return []
    query = _in_flight_query().where(runs.c.run_id.in_(ids)).order_by(runs.c.started_at, runs.c.run_id)
    return _still_running(conn.execute(query).mappings())


def flagged_runs(conn: Connection, now: float, limit: int) -> list[dict[str, Any]]:
    """Running runs whose lease the watchdog marked stuck, that were told to stop, or that are past their
    deadline: the ones an operator must see even when many older runs fill the page. ``leases`` holds
    only live runs, so this stays small."""
    lease = leases.c
    flagged = lease.stuck.is_(True) | lease.stop_reason.is_not(None) | (lease.deadline <= now)
    query = (
        _in_flight_query(from_leases=True)
        .where(flagged)
        .order_by(lease.started_at, lease.run_id)
        .limit(limit)
    )
    return _still_running(conn.execute(query).mappings())


def running_count(conn: Connection) -> int:
    query = select(func.count()).select_from(runs).where(_RUNNING)
    return int(conn.execute(query).scalar_one())


# --- failures grouped by fingerprint --------------------------------------------------------------------


def _failed_since(since: float, until: float) -> ColumnElement[bool]:
    # ``error_fingerprint IS NOT NULL`` is spelled out so both databases use the partial indexes
    # ``ix_runs_failed_*``, which hold only runs that ended with an error.
    r = runs.c
    return and_(r.error_fingerprint.is_not(None), r.ended_at >= since, r.ended_at <= until)


def error_group_rows(
    conn: Connection, since: float, until: float, limit: int, stage: str | None = None
) -> list[dict[str, Any]]:
    """Per fingerprint of runs that failed in ``[since, until]`` (at ``stage``, when given): count, videos
    affected, first and last seen; the most frequent first. Answered from ``ix_runs_failed_ended`` alone
    (the error itself comes from ``latest_failures``: a fingerprint names one stage and error)."""
    r = runs.c
    count = func.count().label("count")
    query = (
        select(
            r.error_fingerprint.label("fingerprint"), count, func.count(r.item_id.distinct()).label("videos"),
            func.min(r.ended_at).label("first_seen"), func.max(r.ended_at).label("last_seen"),
        )
        .where(_failed_since(since, until), *([r.stage == stage] if stage else []))
        .group_by(r.error_fingerprint)
        .order_by(count.desc(), r.error_fingerprint)
        .limit(limit)
    )  # fmt: skip
    return [dict(row) for row in conn.execute(query).mappings()]


def latest_failures(conn: Connection, fingerprints: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The latest failed run of each fingerprint: its run id, item, stage and error (type, message,
    stack)."""
    r = runs.c
    found: dict[str, dict[str, Any]] = {}
    for fp in fingerprints:  # one lookup each at the end of the fingerprint's range in the index
        query = (
            select(r.run_id, r.item_id, r.stage, r.error, r.ended_at)
            .where(r.error_fingerprint.is_not(None), r.error_fingerprint == fp)
            .order_by(r.ended_at.desc(), r.item_id.desc())  # the index's order: no sort
            .limit(1)
        )
        row = conn.execute(query).mappings().first()
        if row is not None:
            found[fp] = dict(row)
    return found


def error_buckets(
    conn: Connection, fingerprints: Sequence[str], since: float, until: float, width: float
) -> list[tuple[str, int, int]]:
    """(fingerprint, bucket, failures) for ``fingerprints`` in ``[since, until]``."""
    if not fingerprints:
        return []
    r = runs.c
    bucket = bucket_of(conn, r.ended_at, since, width).label("bucket")
    query = (
        select(r.error_fingerprint, bucket, func.count())
        .where(_failed_since(since, until), r.error_fingerprint.in_(list(fingerprints)))
        .group_by(r.error_fingerprint, bucket)
    )
    return [(fp, int(b), int(n)) for fp, b, n in conn.execute(query)]


def videos_of_fingerprint(conn: Connection, fingerprint: str, limit: int) -> list[dict[str, Any]]:
    """The videos that failed with ``fingerprint``, most recent failure first, with their failures
    counted and where each video is now."""
    r, i = runs.c, items.c
    last = func.max(r.ended_at).label("last_failed_at")
    failed = (
        select(r.item_id, func.count().label("failures"), last)
        .where(r.error_fingerprint.is_not(None), r.error_fingerprint == fingerprint)
        .group_by(r.item_id)
        .order_by(last.desc(), r.item_id)
        .limit(limit)
        .subquery()
    )
    query = (
        select(failed, i.pipeline, i.status, i.stage, i.account, i.scenario, i.stuck)
        .join_from(failed, items, i.item_id == failed.c.item_id)
        .order_by(failed.c.last_failed_at.desc(), failed.c.item_id)
    )
    return [dict(row) for row in conn.execute(query).mappings()]


# --- one item's control rows ----------------------------------------------------------------------------


def work_rows(conn: Connection, item_id: str) -> list[dict[str, Any]]:
    """The item's units of guarded work, oldest first. ``store.control.works_of_item`` locks them for an
    operator's action; a page view must not take row locks, hence this plain read."""
    query = select(work).where(work.c.item_id == item_id).order_by(work.c.created_at, work.c.stage)
    return [dict(row) for row in conn.execute(query).mappings()]
