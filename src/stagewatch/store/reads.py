"""Named read queries. They use the projections and their indexes; none scans the event log."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Connection, Engine, and_, func, select, tuple_

from stagewatch.domain.projection import ItemState, RunState
from stagewatch.store import schema
from stagewatch.store.driver import Shape, as_sqlalchemy_error, execute, first, is_postgres
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


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection for a few reads that belong together, through ``store.driver`` only, as cheap as each
    database allows. SQLite: one deferred read transaction, begun at the driver (through Core's ``begin``
    it costs ~25 µs more), so every read sees the same moment; a Core statement on it fails ("cannot
    start a transaction within a transaction"). PostgreSQL: autocommit; at READ COMMITTED each statement
    of a transaction takes its own snapshot anyway, and this saves the round trips of BEGIN and of the
    ROLLBACK when the connection goes back to the pool (~0.13 ms)."""
    with engine.connect() as conn:
        if is_postgres(conn):
            yield conn.execution_options(isolation_level="AUTOCOMMIT")
            return
        execute(conn, "BEGIN", {})
        try:
            yield conn
        finally:
            sqlite: Any = conn.connection.dbapi_connection
            if sqlite.in_transaction:  # not if an error ended it already
                sqlite.rollback()  # it only read


# One video's reads (``GET /v1/items/{id}``, the dashboard's video page, operators' actions) go straight
# to the driver: through Core, building, compiling and processing the item's two statements took ~0.4 ms
# on SQLite, most of ``query.get_item``; through the driver the whole read takes ~0.15 ms.
_ITEM, _RUN = Shape.of(schema.items), Shape.of(schema.runs)
_ITEM_BY_ID = f"SELECT {_ITEM.columns} FROM items WHERE item_id = :item_id"
_RUNS_OF_ITEM = f"SELECT {_RUN.columns} FROM runs WHERE item_id = :item_id"
_HISTORY = (
    "SELECT events.body, events.time, events.received_at, events.run_id FROM events "
    "WHERE events.item_id = :item_id ORDER BY events.time, events.id"
)


def item(conn: Connection, item_id: str) -> ItemState | None:
    row = first(conn, _ITEM, _ITEM_BY_ID, {"item_id": item_id})
    return item_from_row(row) if row is not None else None


def runs_of(conn: Connection, item_id: str) -> list[RunState]:
    """The item's runs, in no particular order."""
    return _runs(conn, execute(conn, _RUNS_OF_ITEM, {"item_id": item_id}).fetchall())


@dataclass(frozen=True, slots=True)
class ItemStory:
    """One item as ``GET /v1/items/{id}`` shows it: ``item`` None if there is none, its ``runs`` in no
    particular order, its ``history`` if asked for (else empty): dicts of ``body`` (decoded), ``time``,
    ``received_at`` and ``run_id``."""

    item: ItemState | None
    runs: list[RunState]
    history: list[dict[str, Any]]


def item_story(conn: Connection, item_id: str, *, with_history: bool = False) -> ItemStory:
    """The item, its runs and (``with_history``) its events in the order they happened (client time, then
    id for ties). On PostgreSQL the statements go out at once in psycopg's pipeline mode: one round trip
    instead of one each (~0.12 ms less for two statements, ~0.27 ms for three on loopback here)."""
    statements = [_ITEM_BY_ID, _RUNS_OF_ITEM, _HISTORY] if with_history else [_ITEM_BY_ID, _RUNS_OF_ITEM]
    found = _fetch_each(conn, statements, {"item_id": item_id})
    if not found[0]:
        return ItemStory(None, [], [])
    events = _history(conn, found[2]) if with_history else []
    return ItemStory(item_from_row(_ITEM.row(conn, found[0][0])), _runs(conn, found[1]), events)


def _fetch_each(conn: Connection, statements: Sequence[str], params: dict[str, Any]) -> list[list[Any]]:
    """Every row of each statement, all with the same parameters."""
    if not _can_pipeline(conn):
        return [execute(conn, statement, params).fetchall() for statement in statements]
    psycopg: Any = conn.connection.dbapi_connection
    try:
        with psycopg.pipeline():  # leaving it sends them all and waits for every answer
            cursors = [execute(conn, statement, params) for statement in statements]
        return [cursor.fetchall() for cursor in cursors]
    except conn.dialect.loaded_dbapi.Error as exc:  # raised on leaving, not in execute: raise it as it does
        raise as_sqlalchemy_error(conn, "; ".join(statements), params, exc) from exc


def _can_pipeline(conn: Connection) -> bool:
    # Pipeline mode needs libpq 14 or later (psycopg[binary] brings its own).
    return is_postgres(conn) and bool(conn.dialect.loaded_dbapi.Pipeline.is_supported())


def _runs(conn: Connection, found: Sequence[Sequence[Any]]) -> list[RunState]:
    return [run_from_row(_RUN.row(conn, values)) for values in found]


def _history(conn: Connection, found: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    decode = not is_postgres(conn)  # psycopg decodes JSONB itself; sqlite3 returns the text
    return [
        {"body": orjson.loads(body) if decode else body, "time": time, "received_at": received, "run_id": run}
        for body, time, received, run in found
    ]


def items_page(
    conn: Connection, where: ItemFilter, after: tuple[float, str] | None, limit: int
) -> list[ItemState]:
    """Items newest-updated first; ``after`` is the (updated_at, item_id) of the previous page's last."""
    c = schema.items.c
    conditions = _conditions(where, prefix_by_range=not _broad_prefix_on_sqlite(conn, where.id_prefix))
    if after is not None:
        conditions.append(tuple_(c.updated_at, c.item_id) < tuple_(*after))
    query = (
        select(schema.items)
        .where(and_(True, *conditions))
        .order_by(c.updated_at.desc(), c.item_id.desc())
        .limit(limit)
    )
    return [item_from_row(row) for row in conn.execute(query).mappings()]


# How many ids must share a prefix before a page of them is read newest-first from ix_items_updated
# rather than from the id range (see ``_broad_prefix_on_sqlite``).
BROAD_PREFIX = 1000


def _broad_prefix_on_sqlite(conn: Connection, prefix: str | None) -> bool:
    """Whether at least ``BROAD_PREFIX`` ids start with ``prefix``, on SQLite (one short range count).

    A narrow prefix is best read from the id range and its few rows sorted; a broad one (``vid-``) from
    the newest-first index, which fills a page after a few rows. Without statistics SQLite always takes
    the range, and sorting every video took 60 ms at 100,000; PostgreSQL's planner has statistics."""
    if not prefix or is_postgres(conn):
        return False
    ids = select(schema.items.c.item_id).where(*_prefix_range(schema.items.c.item_id, prefix))
    probe = select(func.count()).select_from(ids.limit(BROAD_PREFIX).subquery())
    return conn.execute(probe).scalar_one() >= BROAD_PREFIX


def _conditions(where: ItemFilter, *, prefix_by_range: bool = True) -> list[ColumnElement[bool]]:
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
        # ``item_id || ''`` is the same value, but no index can answer for it: SQLite then walks the
        # index that gives the page's order instead of the id range.
        ids = c.item_id if prefix_by_range else c.item_id + ""
        conditions.extend(_prefix_range(ids, where.id_prefix))
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
