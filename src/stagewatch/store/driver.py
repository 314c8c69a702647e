"""Statements sent straight to the DB-API driver, inside a SQLAlchemy transaction.

For short statements run many times a second (the control plane's decisions), SQLAlchemy is most of
the cost: Core spends ~0.4 ms building, caching and compiling a three-condition SELECT, and even
``exec_driver_sql`` adds ~35 µs to the driver's ~5 µs on SQLite (benchmarks/README.md, "Decisions").
Here each statement is written once with ``:name`` parameters (sqlite3's style) and rewritten once to
psycopg's ``%(name)s``; rows come back as tuples, and ``Shape`` makes Core's dicts of them.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from sqlalchemy import JSON, Boolean, Connection, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

Row = dict[str, Any]
T = TypeVar("T")

log = logging.getLogger("stagewatch.store")

_NAMED = re.compile(r"(?<![:\w]):(\w+)")


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def upsert_insert(conn: Connection, table: Table) -> Any:
    """``INSERT`` into ``table`` in the connection's own dialect, which has ``on_conflict_do_nothing``
    and ``on_conflict_do_update`` (SQLite's and PostgreSQL's take the same arguments)."""
    return (postgresql.insert if is_postgres(conn) else sqlite.insert)(table)


@functools.lru_cache(maxsize=512)
def _for_psycopg(statement: str) -> str:
    return _NAMED.sub(r"%(\1)s", statement)


def execute(conn: Connection, statement: str, params: Any, *, many: bool = False) -> Any:
    """Run one statement (``many``: once per mapping in the sequence ``params``) on the transaction's own
    driver connection; return the cursor. Driver errors are raised as SQLAlchemy's (``OperationalError``,
    ``IntegrityError``...) as ``conn.execute`` raises them, so callers and the API see no difference."""
    sql = _for_psycopg(statement) if is_postgres(conn) else statement
    driver = conn.connection.dbapi_connection
    assert driver is not None, "a connection inside its transaction is open"
    cursor = driver.cursor()
    try:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise as_sqlalchemy_error(conn, sql, params, exc) from exc
    return cursor


def as_sqlalchemy_error(conn: Connection, sql: str, params: Any, exc: Any) -> BaseException:
    """A driver error as the SQLAlchemy error ``conn.execute`` would have raised for it."""
    lost = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
    if lost:  # as SQLAlchemy does: a dead connection must not go back to the pool
        conn.invalidate(exc)
    base: type[Exception] = conn.dialect.loaded_dbapi.Error
    error: BaseException = DBAPIError.instance(
        sql, params, exc, base, connection_invalidated=lost, dialect=conn.dialect
    )
    return error


# PostgreSQL's errors that say "try the same transaction again": deadlock detected, serialization
# failure, lock not available. The transaction was rolled back whole, so a retry is safe.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001", "55P03"})


# How many times a transaction is tried when PostgreSQL aborts it for one of those.
TRANSIENT_ATTEMPTS = 4


def is_transient(exc: BaseException) -> bool:
    """Whether a (SQLAlchemy-wrapped) database error is one a retry of the transaction may not meet."""
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    return getattr(original, "sqlstate", None) in _TRANSIENT_SQLSTATES


def retry_transient(transaction: Callable[[], T], what: str) -> T:
    """Run ``transaction`` (a whole transaction, begun and ended inside it) and run it again, after a
    short random pause, while PostgreSQL aborts it as transient (``is_transient``), up to
    ``TRANSIENT_ATTEMPTS`` times in all. ``what`` names it in the log."""
    for attempt in range(1, TRANSIENT_ATTEMPTS):
        try:
            return transaction()
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The driver's own message: SQLAlchemy's would carry the whole statement.
            log.warning("%s.transient_retry attempt=%d error=%s", what, attempt, getattr(exc, "orig", exc))
            time.sleep(random.uniform(0.0, 0.05 * attempt))
    return transaction()


def json_value(value: Any) -> str:
    """A JSON column's value as Core binds it (``None`` too becomes JSON ``null``)."""
    return orjson.dumps(value).decode()


def any_of(conn: Connection, column: str, values: Sequence[Any]) -> tuple[str, Row]:
    """A condition that ``column`` is one of ``values`` (not empty), and its parameters: one array on
    PostgreSQL, one parameter per value on SQLite."""
    if is_postgres(conn):
        return f"{column} = ANY(:{column})", {column: list(values)}
    names = [f"{column}{i}" for i in range(len(values))]
    return f"{column} IN ({', '.join(':' + n for n in names)})", dict(zip(names, values, strict=True))


@dataclass(frozen=True)
class Shape:
    """A table's columns in order, and how to turn a driver's tuple of them into the dict Core returns:
    JSON decoded (psycopg decodes JSONB itself; sqlite3 returns text) and SQLite's 0/1 as booleans."""

    names: tuple[str, ...]
    json: tuple[int, ...]
    flags: tuple[int, ...]

    @classmethod
    def of(cls, table: Table) -> Shape:
        columns = list(table.columns)
        return cls(
            tuple(c.name for c in columns),
            tuple(i for i, c in enumerate(columns) if isinstance(c.type, JSON)),
            tuple(i for i, c in enumerate(columns) if isinstance(c.type, Boolean)),
        )

    @property
    def columns(self) -> str:
        return ", ".join(self.names)

    @property
    def json_names(self) -> frozenset[str]:
        return frozenset(self.names[i] for i in self.json)

    def row(self, conn: Connection, values: Sequence[Any]) -> Row:
        cells = list(values)
        if not is_postgres(conn):
            for i in self.json:
                if cells[i] is not None:
                    cells[i] = orjson.loads(cells[i])
            for i in self.flags:
                cells[i] = bool(cells[i])
        return dict(zip(self.names, cells, strict=True))


def first(conn: Connection, shape: Shape, statement: str, params: Mapping[str, Any]) -> Row | None:
    """The first row a statement returns, as a dict; None when there is none."""
    found = execute(conn, statement, params).fetchall()
    return shape.row(conn, found[0]) if found else None


@contextmanager
def savepoint(conn: Connection) -> Iterator[None]:
    """Undo only what the block wrote if it raises (the error goes on); the transaction stays usable."""
    execute(conn, "SAVEPOINT sw_step", {})
    try:
        yield
    except BaseException:
        execute(conn, "ROLLBACK TO SAVEPOINT sw_step", {})
        execute(conn, "RELEASE SAVEPOINT sw_step", {})
        raise
    execute(conn, "RELEASE SAVEPOINT sw_step", {})
