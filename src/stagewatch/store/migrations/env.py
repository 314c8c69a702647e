"""Alembic environment. stagewatch runs migrations in-process (``stagewatch migrate`` and on ``serve``),
handing over an open connection in ``config.attributes['connection']``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from stagewatch.store.schema import metadata

config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    # Plain `alembic` command line use (e.g. autogenerate during development).
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///stagewatch.db")
    with engine.begin() as conn:
        _migrate(conn)


def _migrate(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table instead.
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
