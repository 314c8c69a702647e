"""logs, with a full-text index per backend

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 14:00:00.000000

SQLite: ``logs_fts`` is an external-content FTS5 table over ``logs.message`` and ``logs.exception``
(rowid = ``logs.seq``), kept in sync by triggers, so every insert and every retention delete updates it
in the same transaction.

PostgreSQL: ``logs.search`` is a generated ``tsvector`` (config ``simple``: no stemming, no stop words,
so ids and error codes stay searchable) with a GIN index. ASCII punctuation is turned into spaces first
so both backends split text the same way: ``vid-0042`` is the words ``vid`` and ``0042``, as FTS5's
unicode61 tokenizer sees it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.String(length=256).with_variant(sa.String(length=256, collation="C"), "postgresql")

# The expression the PostgreSQL ``search`` column is generated from; store/logs.py splits queries alike.
SEARCH_DOCUMENT = (
    "to_tsvector('simple'::regconfig, "
    "regexp_replace(message || ' ' || coalesce(exception, ''), '[[:punct:]]+', ' ', 'g'))"
)

_SQLITE_FTS = (
    "CREATE VIRTUAL TABLE logs_fts USING fts5("
    "message, exception, content='logs', content_rowid='seq', tokenize='unicode61')",
    "CREATE TRIGGER logs_fts_insert AFTER INSERT ON logs BEGIN "
    "INSERT INTO logs_fts(rowid, message, exception) VALUES (new.seq, new.message, new.exception); END",
    "CREATE TRIGGER logs_fts_delete AFTER DELETE ON logs BEGIN "
    "INSERT INTO logs_fts(logs_fts, rowid, message, exception) "
    "VALUES ('delete', old.seq, old.message, old.exception); END",
    "CREATE TRIGGER logs_fts_update AFTER UPDATE OF message, exception ON logs BEGIN "
    "INSERT INTO logs_fts(logs_fts, rowid, message, exception) "
    "VALUES ('delete', old.seq, old.message, old.exception); "
    "INSERT INTO logs_fts(rowid, message, exception) VALUES (new.seq, new.message, new.exception); END",
)


def upgrade() -> None:
    op.create_table(
        "logs",
        sa.Column(
            "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("logger", sa.String(length=256), nullable=True),
        sa.Column("item_id", _ID, nullable=True),
        sa.Column("run_id", _ID, nullable=True),
        sa.Column("stage", sa.String(length=256), nullable=True),
        sa.Column("pipeline", sa.String(length=256), nullable=True),
        sa.Column("trace_id", sa.String(length=32), nullable=True),
        sa.Column("span_id", sa.String(length=16), nullable=True),
        sa.Column("worker", sa.String(length=256), nullable=True),
        sa.Column("revision", sa.String(length=256), nullable=True),
        sa.Column(
            "attrs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("exception", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_logs_time", "logs", ["time", "seq"])
    op.create_index("ix_logs_item_time", "logs", ["item_id", "time", "seq"])
    op.create_index("ix_logs_run_time", "logs", ["run_id", "time", "seq"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"ALTER TABLE logs ADD COLUMN search tsvector GENERATED ALWAYS AS ({SEARCH_DOCUMENT}) STORED"
        )
        op.execute("CREATE INDEX ix_logs_search ON logs USING gin (search)")
    else:
        for statement in _SQLITE_FTS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for trigger in ("logs_fts_insert", "logs_fts_delete", "logs_fts_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS logs_fts")
    op.drop_table("logs")
