"""The tables. ``events`` is the append-only log; ``items``, ``runs`` and ``stage_counts`` are
projections of it, written in the same transaction as the events they come from."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

# Ids compare byte by byte on PostgreSQL too, so a prefix search is an index range scan.
Id = String(256).with_variant(String(256, collation="C"), "postgresql")
Json = JSON().with_variant(JSONB(), "postgresql")
Seq = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "events",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("id", String(128), nullable=False, unique=True),
    Column("type", String(32), nullable=False),
    Column("item_id", Id, nullable=False),
    Column("run_id", Id),
    Column("pipeline", String(256), nullable=False),
    Column("stage", String(256)),
    Column("time", Float, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("trace_id", String(32)),
    Column("body", Json, nullable=False),
    Index("ix_events_item_time", "item_id", "time"),
)

items = Table(
    "items",
    metadata,
    Column("item_id", Id, primary_key=True),
    Column("pipeline", String(256), nullable=False),
    Column("status", String(32), nullable=False),
    Column("stage", String(256)),
    Column("status_since", Float),
    Column("account", String(256)),
    Column("scenario", String(256)),
    Column("trace_id", String(32)),
    Column("source", String(256)),
    Column("actor", String(256)),
    Column("params", Json),
    Column("attrs", Json, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Json),
    Column("stages_done", Json, nullable=False),
    Column("stuck", Boolean, nullable=False),
    Column("stuck_reason", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("event_count", Integer, nullable=False),
    Column("registers", Json, nullable=False),
    Index("ix_items_status_stage_since", "status", "stage", "status_since"),
    Index("ix_items_status_updated", "status", "updated_at", "item_id"),
    Index("ix_items_updated", "updated_at", "item_id"),
    Index("ix_items_account_updated", "account", "updated_at"),
    Index("ix_items_scenario_updated", "scenario", "updated_at"),
    Index("ix_items_stage_updated", "stage", "updated_at"),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", Id, primary_key=True),
    Column("item_id", Id, nullable=False),
    Column("stage", String(256), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", String(32), nullable=False),
    Column("enqueued_at", Float),
    Column("started_at", Float),
    Column("ended_at", Float),
    Column("heartbeat_at", Float),
    Column("progress", Float),
    Column("progress_note", Text),
    Column("worker", String(256)),
    Column("revision", String(256)),
    Column("error", Json),
    Column("error_fingerprint", String(32)),
    Column("trace_id", String(32)),
    Column("span_id", String(16)),
    Column("resources", Json, nullable=False),
    Column("registers", Json, nullable=False),
    Index("ix_runs_item", "item_id"),
    Index("ix_runs_status_stage", "status", "stage"),
    Index("ix_runs_fingerprint", "error_fingerprint"),
)

# Per pipeline, stage and status, how many items are there now ("done": items that finished the stage).
# Kept by the projection so the summary never counts rows.
stage_counts = Table(
    "stage_counts",
    metadata,
    Column("pipeline", String(256), primary_key=True),
    Column("stage", String(256), primary_key=True),
    Column("status", String(32), primary_key=True),
    Column("count", BigInteger, nullable=False),
)

# Log lines shipped by workers, tagged with the video's ids. Searched through a full-text index that the
# migration adds per backend (see store/logs.py): an FTS5 table kept in sync by triggers on SQLite, a
# generated ``search`` tsvector column with a GIN index on PostgreSQL. ``level`` is the stdlib number
# (10 debug … 50 critical) so "warning and above" is a range.
logs = Table(
    "logs",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("id", String(128), nullable=False, unique=True),
    Column("time", Float, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("level", Integer, nullable=False),
    Column("message", Text, nullable=False),
    Column("logger", String(256)),
    Column("item_id", Id),
    Column("run_id", Id),
    Column("stage", String(256)),
    Column("pipeline", String(256)),
    Column("trace_id", String(32)),
    Column("span_id", String(16)),
    Column("worker", String(256)),
    Column("revision", String(256)),
    Column("attrs", Json),
    Column("exception", Text),
    Index("ix_logs_time", "time", "seq"),
    Index("ix_logs_item_time", "item_id", "time", "seq"),
    Index("ix_logs_run_time", "run_id", "time", "seq"),
)
