"""Driver-level SQL for the ingest hot path.

SQLAlchemy Core spends ~40 µs turning one row into a mapping and ~24 µs processing one row of an
executemany; ingest reads and writes thousands of item and run rows per transaction, so those costs
dominated it (see benchmarks/README.md). These helpers send plain SQL with tuples to the driver and
decode JSON columns themselves. Only the few statements on the hot path use them.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any

import orjson
from sqlalchemy import JSON, Boolean, Connection, Float, Integer, Table

from stagewatch.store import driver

Row = dict[str, Any]


@functools.cache
def _columns(table: Table) -> tuple[tuple[str, ...], frozenset[str], frozenset[str]]:
    """Column names in order, and which of them hold JSON or booleans."""
    names = tuple(column.name for column in table.columns)
    json = frozenset(c.name for c in table.columns if isinstance(c.type, JSON))
    flags = frozenset(c.name for c in table.columns if isinstance(c.type, Boolean))
    return names, json, flags


def _matching(conn: Connection, column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
    """``column`` is one of ``values``: one array parameter on PostgreSQL, a list of them on SQLite."""
    if driver.is_postgres(conn):
        return f"{column} = ANY(%s)", [list(values)]
    return f"{column} IN ({','.join('?' * len(values))})", list(values)


def select_where_in(
    conn: Connection, table: Table, conditions: Iterable[tuple[str, Sequence[str]]], *, suffix: str = ""
) -> list[Row]:
    """Rows of ``table`` where any ``column IN values`` holds, as dicts with JSON decoded."""
    clauses, params = [], []
    for column, values in conditions:
        if values:
            clause, args = _matching(conn, column, values)
            clauses.append(clause)
            params += args
    if not clauses:
        return []
    names, json, flags = _columns(table)
    sql = f"SELECT {', '.join(names)} FROM {table.name} WHERE {' OR '.join(clauses)} {suffix}"
    rows = conn.exec_driver_sql(sql, tuple(params)).fetchall()
    return [_decode(dict(zip(names, row, strict=True)), json, flags) for row in rows]


# SQLite allows 32,766 parameters per statement since 3.32 (999 before); lookups by a list of keys are
# split well under that, so a group commit of any size stays one statement per chunk.
_KEYS_PER_LOOKUP = 900


def column_where_in(
    conn: Connection, table: Table, column: str, key: str, values: Sequence[str]
) -> list[Any]:
    """``column`` of the rows whose ``key`` is one of ``values``. Positional parameters on SQLite: it
    looks each named parameter up among the earlier ones, so thousands of names cost milliseconds."""
    chunk_size = len(values) if driver.is_postgres(conn) else _KEYS_PER_LOOKUP
    found: list[Any] = []
    for start in range(0, len(values), max(chunk_size, 1)):
        clause, params = _matching(conn, key, values[start : start + chunk_size])
        sql = f"SELECT {column} FROM {table.name} WHERE {clause}"
        found.extend(value for (value,) in conn.exec_driver_sql(sql, tuple(params)).fetchall())
    return found


def _decode(row: Row, json: frozenset[str], flags: frozenset[str]) -> Row:
    for name in json:
        value = row[name]
        if isinstance(value, str | bytes):
            row[name] = orjson.loads(value)
    for name in flags:
        row[name] = bool(row[name])
    return row


def upsert_objects_sqlite(conn: Connection, table: Table, objects: Iterable[Any], key: str) -> None:
    """Insert or replace whole rows by ``key`` on SQLite, through the driver's executemany, from objects
    with an attribute per column (the projection's states): no dict per row in between."""
    names, _, _ = _columns(table)
    values = _encoded(map(operator.attrgetter(*names), objects), _json_positions(table))
    if values:
        driver.execute(conn, _upsert_sql(table, key), values, many=True)


def upsert_objects_postgres(conn: Connection, table: Table, objects: Iterable[Any], key: str) -> None:
    """Insert or update whole rows by ``key`` on PostgreSQL from objects with an attribute per column,
    as one statement with an array per column (``unnest``): psycopg then neither sends a round trip per
    row nor re-parses a multi-row VALUES statement of thousands of parameters in Python (it caches the
    parsing of short statements only), which was a third of PostgreSQL ingest."""
    names, _, _ = _columns(table)
    rows = _encoded(map(operator.attrgetter(*names), objects), _json_positions(table))
    if rows:
        _unnest_postgres(conn, table, names, rows, key, update=True)


def insert_missing_postgres(conn: Connection, table: Table, rows: Sequence[Row], key: str) -> None:
    """Insert rows (dicts with the same keys) whose ``key`` is not taken yet, on PostgreSQL, in one
    ``unnest`` statement (JSON columns encoded as in ``upsert_objects_postgres``)."""
    if rows:
        names = tuple(rows[0])
        json_at = tuple(i for i, name in enumerate(names) if name in _columns(table)[1])
        encoded = _encoded((tuple(row[name] for name in names) for row in rows), json_at)
        _unnest_postgres(conn, table, names, encoded, key, update=False)


def insert_new_postgres(
    conn: Connection, table: Table, names: tuple[str, ...], rows: Sequence[Sequence[Any]], key: str
) -> set[Any]:
    """Insert rows (values in ``names`` order, JSON columns already text) whose ``key`` is not taken,
    in one ``unnest`` statement; return the keys of the rows inserted."""
    if not rows:
        return set()
    found = _unnest_postgres(conn, table, names, rows, key, update=False, returning=key)
    return {value for (value,) in found}


def _unnest_postgres(
    conn: Connection,
    table: Table,
    names: tuple[str, ...],
    rows: Sequence[Sequence[Any]],
    key: str,
    *,
    update: bool,
    returning: str | None = None,
) -> list[Any]:
    """Send ``rows`` as one array per column to ``_unnest_sql``'s statement; its rows, if it returns."""
    types = _array_types(table)
    columns = [
        _plain(list(cells), types[name]) for name, cells in zip(names, zip(*rows, strict=True), strict=True)
    ]
    cursor = driver.execute(conn, _unnest_sql(table, names, key, update=update, returning=returning), columns)
    return cursor.fetchall() if returning else []


def _plain(column: list[Any], element: str) -> list[Any]:
    """A column's values as psycopg's binary array dumper takes them: one Python type per list (it
    refuses a mix, such as an int among floats) and enum members as their values (it may dump an enum
    by its name). Most columns already are, and pass through after one look at their types."""
    kinds = set(map(type, column))
    kinds.discard(type(None))
    if len(kinds) <= 1 and not any(issubclass(kind, Enum) for kind in kinds):
        return column
    if element == "float8":
        return [None if cell is None else float(cell) for cell in column]
    return [cell.value if isinstance(cell, Enum) else cell for cell in column]


@functools.cache
def _array_types(table: Table) -> dict[str, str]:
    return {column.name: _array_type(column.type) for column in table.columns}


@functools.cache
def _unnest_sql(
    table: Table, names: tuple[str, ...], key: str, *, update: bool, returning: str | None = None
) -> str:
    types = _array_types(table)
    # ``%b``: each array goes in binary, which psycopg writes without escaping every element (its text
    # form escapes quotes with a regular expression per element: half of PostgreSQL ingest's time).
    arrays = ", ".join(f"%b::{types[name]}[]" for name in names)
    listed = ", ".join(names)
    if update:
        sets = ", ".join(f"{name} = excluded.{name}" for name in names if name != key)
        conflict = f"ON CONFLICT ({key}) DO UPDATE SET {sets}"
    else:
        conflict = f"ON CONFLICT ({key}) DO NOTHING"
    source = f"SELECT {listed} FROM unnest({arrays}) AS batch({listed})"
    tail = f" RETURNING {returning}" if returning else ""
    return f"INSERT INTO {table.name} ({listed}) {source} {conflict}{tail}"


def _array_type(column_type: Any) -> str:
    """The PostgreSQL element type to send a column's values as (JSON goes as text, cast to jsonb)."""
    if isinstance(column_type, JSON):
        return "jsonb"
    if isinstance(column_type, Boolean):
        return "boolean"
    if isinstance(column_type, Float):
        return "float8"
    if isinstance(column_type, Integer):
        return "int8"
    return "text"


@functools.cache
def _json_positions(table: Table) -> tuple[int, ...]:
    names, json, _ = _columns(table)
    return tuple(i for i, name in enumerate(names) if name in json)


def _encoded(rows: Iterable[Sequence[Any]], json_at: tuple[int, ...]) -> list[list[Any]]:
    """Each row's values in column order, with the JSON columns encoded (the hot loop of every upsert).
    sqlite3 binds enum members that are ``str`` or ``int`` by their value, so they pass through."""
    dumps = orjson.dumps
    values = []
    for row in rows:
        cells = list(row)
        for i in json_at:
            if cells[i] is not None:
                cells[i] = dumps(cells[i]).decode()
        values.append(cells)
    return values


@functools.cache
def _upsert_sql(table: Table, key: str) -> str:
    names, _, _ = _columns(table)
    updates = ", ".join(f"{name} = excluded.{name}" for name in names if name != key)
    marks = ", ".join("?" * len(names))
    return (
        f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )
