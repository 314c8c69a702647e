"""Bringing a database's schema up to date with Alembic, in-process."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from stagewatch.store.engine import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(db: Database) -> None:
    """Apply every pending migration. Safe to run again: nothing happens when already at head."""
    with db.writer.begin() as conn:
        config = _config()
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def is_current(db: Database) -> bool:
    """Whether the database's schema is at the newest revision this version of stagewatch knows."""
    heads = set(ScriptDirectory.from_config(_config()).get_heads())
    with db.reader.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads()) == heads
