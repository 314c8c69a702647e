"""Named queries on log lines: append, search one page, delete old lines in bounded chunks.

Full-text search uses a real index on each backend (created by migration 0002):

- SQLite: the external-content FTS5 table ``logs_fts`` (rowid = ``logs.seq``), kept in sync by triggers.
- PostgreSQL: the generated ``logs.search`` tsvector (config ``simple``) with the GIN index
  ``ix_logs_search``.

Both split text into words at whitespace and ASCII punctuation, so ``vid-0042`` is the two words ``vid``
and ``0042`` everywhere. A query is turned into words the same way here, in Python, and every word is
quoted before it reaches the full-text engine, so no user input can be read as FTS syntax.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    Select,
    and_,
    bindparam,
    column,
    delete,
    func,
    literal_column,
    select,
    table,
    text,
    tuple_,
)
from sqlalchemy.dialects import sqlite

from stagewatch.store import driver, schema

# Whitespace, control characters and ASCII punctuation separate words (as in the migration's index).
_SEPARATORS = re.compile(r"[\s\x00-\x1f\x7f" + re.escape(string.punctuation) + r"]+")
# A last word shorter than this is matched exactly: a one-letter prefix would match half the index.
MIN_PREFIX = 3

_fts = table("logs_fts", column("rowid"))
_search: ColumnElement[Any] = literal_column("logs.search")


@dataclass(frozen=True, slots=True)
class TextQuery:
    """Words to find, all of them (AND). Each phrase is words that must stand next to each other, as
    one typed term such as ``vid-0042`` gives ``("vid", "0042")``. With ``prefix``, the last phrase is a
    single word that also matches longer words (``time`` finds ``timeout``)."""

    phrases: tuple[tuple[str, ...], ...]
    prefix: bool = False

    def fts5(self) -> str:
        """The query in FTS5 syntax, every phrase a double-quoted string."""
        quoted = ['"' + " ".join(phrase).replace('"', '""') + '"' for phrase in self.phrases]
        return " ".join(quoted) + ("*" if self.prefix else "")

    def tsquery(self) -> str:
        """The query in PostgreSQL ``to_tsquery`` syntax, every word a quoted lexeme."""
        terms = [" <-> ".join("'" + word.replace("'", "''") + "'" for word in p) for p in self.phrases]
        return " & ".join(terms) + (":*" if self.prefix else "")


def text_query(typed: str) -> TextQuery | None:
    """Parse what a person typed. ``None`` when it holds no word at all (only punctuation)."""
    phrases = [tuple(w for w in _SEPARATORS.split(term) if w) for term in typed.split()]
    phrases = [p for p in phrases if p]
    if not phrases:
        return None
    last = typed.split()[-1]
    prefix = len(phrases[-1]) == 1 and phrases[-1][0] == last and len(last) >= MIN_PREFIX
    return TextQuery(tuple(phrases), prefix)


@dataclass(frozen=True, slots=True)
class LogFilter:
    """What ``GET /v1/logs`` and ``stagewatch logs`` may filter on. ``None`` means any."""

    text: TextQuery | None = None
    item_id: str | None = None
    run_id: str | None = None
    stage: str | None = None
    min_level: int | None = None
    since: float | None = None
    until: float | None = None


def insert_logs(conn: Connection, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Append log lines, skipping ids already stored. Returns the ids that were new."""
    if not rows:
        return set()
    if driver.is_postgres(conn):
        return _insert_postgres(conn, rows)
    stmt = sqlite.insert(schema.logs).on_conflict_do_nothing(index_elements=["id"])
    return set(conn.execute(stmt.returning(schema.logs.c.id), list(rows)).scalars())


# PostgreSQL takes a batch as one array per column: one statement, however many lines (several times
# faster than SQLAlchemy's multi-row VALUES with RETURNING, whose 16 x 1,000 parameters are slow to plan).
_PG_ARRAYS = {
    "id": "text", "time": "float8", "received_at": "float8", "level": "int4", "message": "text",
    "logger": "text", "item_id": "text", "run_id": "text", "stage": "text", "pipeline": "text",
    "trace_id": "text", "span_id": "text", "worker": "text", "revision": "text", "attrs": "jsonb",
    "exception": "text",
}  # fmt: skip
_PG_INSERT = text(
    f"INSERT INTO logs ({', '.join(_PG_ARRAYS)}) "
    f"SELECT * FROM unnest({', '.join(f'CAST(:{name} AS {kind}[])' for name, kind in _PG_ARRAYS.items())}) "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)


def _insert_postgres(conn: Connection, rows: Sequence[dict[str, Any]]) -> set[str]:
    columns: dict[str, list[Any]] = {name: [row.get(name) for row in rows] for name in _PG_ARRAYS}
    columns["attrs"] = [None if value is None else json.dumps(value) for value in columns["attrs"]]
    return set(conn.execute(_PG_INSERT, columns).scalars())


def logs_page(
    conn: Connection, where: LogFilter, after: tuple[float, int] | None, limit: int
) -> list[RowMapping]:
    """Matching lines newest first; ``after`` is the (time, seq) of the previous page's last line."""
    if where.text is not None and driver.is_postgres(conn):
        # Rare words are best found through the GIN index, common ones by walking the time index until
        # a page is full: plan each search for its own words, never with a generic prepared plan.
        conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    return list(conn.execute(logs_query(conn, where, after, limit)).mappings())


def logs_query(
    conn: Connection, where: LogFilter, after: tuple[float, int] | None, limit: int
) -> Select[Any]:
    """The query behind ``logs_page`` (tests EXPLAIN it to see which index answers)."""
    c = schema.logs.c
    conditions = _conditions(conn, where)
    if after is not None:
        conditions.append(tuple_(c.time, c.seq) < tuple_(*after))
    return (
        select(schema.logs).where(and_(True, *conditions)).order_by(c.time.desc(), c.seq.desc()).limit(limit)
    )


def _conditions(conn: Connection, where: LogFilter) -> list[ColumnElement[bool]]:
    c = schema.logs.c
    conditions: list[ColumnElement[bool]] = []
    for col, value in ((c.item_id, where.item_id), (c.run_id, where.run_id), (c.stage, where.stage)):
        if value is not None:
            conditions.append(col == value)
    if where.min_level is not None:
        conditions.append(c.level >= where.min_level)
    if where.since is not None:
        conditions.append(c.time >= where.since)
    if where.until is not None:
        conditions.append(c.time <= where.until)
    if where.text is not None:
        conditions.append(_matches(conn, where.text))
    return conditions


def _matches(conn: Connection, words: TextQuery) -> ColumnElement[bool]:
    """The full-text condition, answered by the backend's full-text index."""
    if driver.is_postgres(conn):
        tsquery = func.to_tsquery(
            literal_column("'simple'::regconfig"), bindparam("tsquery", words.tsquery())
        )
        return _search.op("@@")(tsquery)
    matching = select(_fts.c.rowid).where(literal_column("logs_fts").op("MATCH")(words.fts5()))
    return schema.logs.c.seq.in_(matching.scalar_subquery())


def delete_logs_before(conn: Connection, cutoff: float, limit: int) -> int:
    """Delete up to ``limit`` of the oldest lines whose time is before ``cutoff``; how many went.
    On SQLite the FTS5 index is updated by the delete trigger in the same transaction."""
    c = schema.logs.c
    oldest = select(c.seq).where(c.time < cutoff).order_by(c.time).limit(limit)
    result = conn.execute(delete(schema.logs).where(c.seq.in_(oldest.scalar_subquery())))
    return int(result.rowcount)
