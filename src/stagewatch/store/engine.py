"""Opening the database: SQLite in WAL mode by default, PostgreSQL through psycopg 3."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import Pool, PoolProxiedConnection, QueuePool

from stagewatch.errors import ConfigError
from stagewatch.store.projection_cache import ProjectionCache


def _dump_json(value: Any) -> str:
    return orjson.dumps(value).decode()


# JSON columns are written on every ingest; orjson is several times faster than the json module.
_JSON_CODEC: dict[str, Any] = {"json_serializer": _dump_json, "json_deserializer": orjson.loads}


@dataclass(frozen=True)
class Database:
    """The engines of one database. On SQLite, writes go through their own engine whose transactions
    begin IMMEDIATE, so a writer takes the lock up front instead of failing to upgrade a read lock."""

    url: str
    reader: Engine
    writer: Engine
    # SQLite only (one writer): what this process last wrote of the projection; see projection_cache.
    projection_cache: ProjectionCache | None = None

    @property
    def dialect(self) -> str:
        return self.reader.dialect.name

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction on the writer that keeps the projection cache true: validated before the first
        write, sealed after the last, dropped if anything fails (the cached objects may have been changed
        in place). Whatever writes items or runs inside must do it through ``projector.store_events``
        with this cache, or say so (``ProjectionCache.forget``)."""
        cache = self.projection_cache
        try:
            with self.writer.begin() as conn:
                if cache is not None:
                    cache.validate(conn)
                yield conn
                if cache is not None:
                    cache.seal(conn)
        except BaseException:
            if cache is not None:
                cache.clear()
            raise

    def ping(self) -> None:
        with self.reader.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.reader.dispose()
        if self.writer is not self.reader:
            self.writer.dispose()


def open_database(url: str) -> Database:
    """Engines for ``url``; a bad URL is a ConfigError naming STAGEWATCH_DATABASE_URL."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        reader, writer = _sqlite_engine(url, "DEFERRED"), _sqlite_engine(url, "IMMEDIATE", _OneWriter)
        return Database(url, reader, writer, ProjectionCache())
    engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, **_JSON_CODEC)
    return Database(url, engine, engine)


def normalise_url(url: str) -> str:
    """Accept the forms people paste: ``postgres://``, ``postgresql://`` and a bare file path."""
    if url.startswith(("postgres://", "postgresql://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    elif "://" not in url:
        url = f"sqlite:///{url}"
    try:
        make_url(url)
    except ArgumentError as exc:
        raise ConfigError(str(exc), key="STAGEWATCH_DATABASE_URL") from None
    return url


class _OneWriter(QueuePool):
    """The SQLite writer engine's pool: one connection, so it is also this process's write lock. Writer
    threads (decisions, group commit, the watchdog, retention) queue here, woken in turn, instead of
    racing for BEGIN IMMEDIATE in SQLite's busy handler, which sleeps 1, 2, 5, 10 ... 100 ms between
    tries (decisions' p99 was 0.6-1.3 s). One connection also keeps the projection cache's stamp valid
    from one transaction to the next, whoever runs it. Other processes on the same file still meet the
    busy handler. A writer waits as long as SQLite would (30 s), then fails as SQLite would."""

    def __init__(self, creator: Any, **kw: Any) -> None:
        super().__init__(creator, **{**kw, "pool_size": 1, "max_overflow": 0, "timeout": 30})

    def connect(self) -> PoolProxiedConnection:
        try:
            return super().connect()
        except exc.TimeoutError as error:
            raise exc.OperationalError(
                "BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked")
            ) from error


def _sqlite_engine(url: str, begin: str, pool: type[Pool] | None = None) -> Engine:
    pooling = {"poolclass": pool} if pool is not None else {}
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, **pooling, **_JSON_CODEC
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so BEGIN is ours (SQLAlchemy's documented
        # recipe); WAL lets readers go on while the writer commits.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA cache_size=-65536")
        # Ids compare case-sensitively everywhere: a prefix search means the same as on PostgreSQL.
        cursor.execute("PRAGMA case_sensitive_like=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(f"BEGIN {begin}")

    return engine
