"""Shared fixtures: a real SQLite file per test, one real PostgreSQL database per session, and a real
server process on loopback.

PostgreSQL: ``STAGEWATCH_TEST_POSTGRES=1`` (set by ``.ci/run``) makes it required, so CI fails instead
of silently skipping; unset, the PostgreSQL cases run when a server answers and skip otherwise;
``STAGEWATCH_TEST_POSTGRES=0`` turns them off.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from stagewatch.domain.pipeline import PipelineRegistry, instagram_preset
from stagewatch.server_process import ServerProcess, launch
from stagewatch.server_process import free_port as free_port  # re-exported for the tests
from stagewatch.service.auth import create_token
from stagewatch.store import schema
from stagewatch.store.audit import Actor
from stagewatch.store.engine import Database, open_database
from stagewatch.store.migrate import upgrade

PG_ADMIN = os.environ.get("STAGEWATCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_MODE = os.environ.get("STAGEWATCH_TEST_POSTGRES", "auto")


def _postgres_reachable() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for this test session, dropped at the end."""
    if PG_MODE == "0":
        pytest.skip("PostgreSQL tests are off (STAGEWATCH_TEST_POSTGRES=0)")
    if not _postgres_reachable():
        if PG_MODE == "1":
            pytest.fail(f"PostgreSQL is required (STAGEWATCH_TEST_POSTGRES=1) but {PG_ADMIN} does not answer")
        pytest.skip(f"no PostgreSQL at {PG_ADMIN}")
    with own_postgres_database() as url:
        yield url


@contextmanager
def own_postgres_database() -> Iterator[str]:
    """A new, migrated PostgreSQL database, dropped afterwards: for a test whose server must be the only
    one on its database (background loops run on one server per database, by an advisory lock)."""
    name = f"stagewatch_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    url = f"{base}/{name}"
    db = open_database(url)
    upgrade(db)
    db.dispose()
    try:
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _empty_postgres(url: str) -> None:
    db = open_database(url)
    tables = ", ".join(table.name for table in schema.metadata.sorted_tables)
    with db.writer.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY"))
    db.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty, migrated database: a SQLite file, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'stagewatch.db'}"
        db = open_database(url)
        upgrade(db)
        db.dispose()
        return url
    url: str = request.getfixturevalue("postgres_url")
    _empty_postgres(url)
    return url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = open_database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def registry() -> PipelineRegistry:
    return PipelineRegistry.of([instagram_preset()])


# The tests' live server is the package's own child-process server (the demo runs the same one).
LiveServer = ServerProcess


def start_server(
    database_url: str, log_path: Path, *extra: str, port: int | None = None, auth: bool = False
) -> LiveServer:
    """``stagewatch serve`` in a real process on a free loopback port (or ``port``, to restart a server
    where its clients expect it); waits until /healthz answers. Auth is off (every request is
    ``anonymous``) unless ``auth``: then every request needs a token (see ``api_token``)."""
    server = launch(database_url, log_path, port=port, extra=("--auth" if auth else "--no-auth", *extra))
    server.wait_healthy(timeout=30)
    return server


def stop_server(server: LiveServer) -> None:
    server.stop(timeout=10)


def api_token(database_url: str, name: str, *scopes: str) -> str:
    """A new API token with ``scopes``, made in the database the way ``stagewatch token create`` does."""
    db = open_database(database_url)
    try:
        return create_token(db, name, scopes, Actor("tests")).token
    finally:
        db.dispose()


@pytest.fixture(scope="session", autouse=True)
def auth_off_by_default() -> Iterator[None]:
    """Apps built in process (``create_app(Settings(...))``) run with auth off unless a test passes
    ``Settings(auth=True)``; servers get ``--no-auth`` or ``--auth`` from ``start_server``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STAGEWATCH_AUTH", "false")
        yield


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def module_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty, migrated database shared by one test module, for a server of the module's own."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('module-db') / 'stagewatch.db'}"
        db = open_database(url)
        upgrade(db)
        db.dispose()
        return url
    url = request.getfixturevalue("postgres_url")
    _empty_postgres(url)
    return url


# Servers with auth on trust a verified token this long, so tests see a revoke take effect quickly.
AUTH_CACHE_SECONDS = 1.0


@pytest.fixture(scope="module")
def auth_server(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real server with auth on, shared by one test module, on SQLite and PostgreSQL. It starts with no
    token: make them with ``api_token(auth_server.database_url, NAME, *SCOPES)``, names unique per test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STAGEWATCH_AUTH_CACHE_SECONDS", str(AUTH_CACHE_SECONDS))
        live = start_server(module_database_url, tmp_path_factory.mktemp("auth") / "server.log", auth=True)
    yield live
    stop_server(live)


@pytest.fixture
def live_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A real ``stagewatch serve`` process on loopback, on the parametrised database."""
    server = start_server(database_url, tmp_path / "server.log")
    yield server
    stop_server(server)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def module_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A real ``stagewatch serve`` on an empty database, shared by one test module (starting a server
    takes seconds; tests that share one use ids of their own)."""
    workdir = tmp_path_factory.mktemp(f"server-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{workdir / 'stagewatch.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        _empty_postgres(url)
    live = start_server(url, workdir / "server.log")
    yield live
    stop_server(live)
