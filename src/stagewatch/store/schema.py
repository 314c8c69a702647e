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
    # The latest control-plane fact about the item (waiting, cancelled, dead_lettered, resumed), which
    # decides its status until a run starts after it: see domain/projection.py.
    Column("control", Json),
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

# --- the control plane (guardrails) ---------------------------------------------------------------------
# These tables are not projections: they are the control plane's own state, changed atomically by
# ``begin``, heartbeats, completions and operator actions (see service/control.py and docs/guardrails.md).

# One row per unit of guarded work: a stage of an item under an idempotency key (default: the item id).
# ``begin`` inserts it if missing and then locks it, so two simultaneous begins of the same work are
# serialised by the database and only one can win. ``state``: idle, running, succeeded, failed, dead.
work = Table(
    "work",
    metadata,
    Column("pipeline", String(256), primary_key=True),
    Column("stage", String(256), primary_key=True),
    Column("work_key", Id, primary_key=True),
    Column("item_id", Id, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("run_id", Id),
    Column("next_attempt_at", Float),
    Column("last_error", Json),
    Column("payload", Json),
    Column("duplicates", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_work_item", "item_id"),
)

# A live run's lease. Gone when the run ends; expired (and reaped by the watchdog) when heartbeats stop.
# Limits count only unexpired leases, so a dead worker's slot frees itself after its heartbeat timeout
# even before the watchdog gets to it.
leases = Table(
    "leases",
    metadata,
    Column("run_id", Id, primary_key=True),
    Column("pipeline", String(256), nullable=False),
    Column("stage", String(256), nullable=False),
    Column("work_key", Id, nullable=False),
    Column("item_id", Id, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("worker", String(256)),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("deadline", Float, nullable=False),
    Column("stop_reason", Text),
    Column("stuck", Boolean, nullable=False),
    Index("ix_leases_expires", "expires_at"),
    Index("ix_leases_item", "item_id"),
)

# The concurrency slots a lease holds, one row per limit key ("stage:publish", "account:42").
lease_slots = Table(
    "lease_slots",
    metadata,
    Column("slot", String(512), primary_key=True),
    Column("run_id", Id, primary_key=True),
    Index("ix_lease_slots_run", "run_id"),
)

# One row per run started under a rate limit, counted over the rolling window.
rate_hits = Table(
    "rate_hits",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("slot", String(512), nullable=False),
    Column("at", Float, nullable=False),
    Column("run_id", Id, nullable=False),
    Index("ix_rate_hits_slot_at", "slot", "at"),
)

# The dead-letter queue. At most one open entry per unit of work (a partial unique index), so a message
# redelivered after its attempts ran out is dead-lettered exactly once.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Seq, primary_key=True, autoincrement=True),
    Column("pipeline", String(256), nullable=False),
    Column("stage", String(256), nullable=False),
    Column("work_key", Id, nullable=False),
    Column("item_id", Id, nullable=False),
    Column("payload", Json),
    Column("error", Json),
    Column("attempts", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("resolved_at", Float),
    Column("resolved_by", String(256)),
    Column("replays", Integer, nullable=False),
    Index("ix_dead_letters_status_created", "status", "created_at"),
    Index("ix_dead_letters_item", "item_id"),
    Index(
        "ux_dead_letters_open_work",
        "pipeline",
        "stage",
        "work_key",
        unique=True,
        sqlite_where=Column("status") == "open",
        postgresql_where=Column("status") == "open",
    ),
)

# An operator's cancel of an item: refused at begin, stop at the next heartbeat. ``active`` is lifted by a
# resume or a replay.
cancellations = Table(
    "cancellations",
    metadata,
    Column("item_id", Id, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("at", Float, nullable=False),
    Column("active", Boolean, nullable=False),
)

# Who did what, when, why, from where and with which parameters. Append-only.
audit = Table(
    "audit",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", Id),
    Column("params", Json),
    Column("reason", Text),
    Column("source", String(256)),
    Index("ix_audit_at", "at"),
    Index("ix_audit_target_at", "target", "at"),
    Index("ix_audit_action_at", "action", "at"),
    Index("ix_audit_actor_at", "actor", "at"),
)

# API tokens: only a SHA-256 of each token is stored (tokens are 256-bit random, so a slow hash adds
# nothing); ``prefix`` is the first characters, shown so a person can tell tokens apart.
tokens = Table(
    "tokens",
    metadata,
    Column("id", Seq, primary_key=True, autoincrement=True),
    Column("name", String(256), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("scopes", Json, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(256)),
    Column("revoked_at", Float),
    Column("last_used_at", Float),
)

# The circuit of each declared dependency, shared by every replica: ``begin`` reads it in its
# transaction, the prober (one replica at a time) and workers' health reports write it.
dependencies = Table(
    "dependencies",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("failures", Integer, nullable=False),
    Column("since", Float, nullable=False),
    Column("checked_at", Float),
    Column("next_probe_at", Float),
    Column("message", Text),
)

# Operators' changes to a stage at run time, shared by every replica: a pause (begin answers wait, naming
# who paused it and why) and a cap on the stage's runs at once. Audited when changed.
stage_overrides = Table(
    "stage_overrides",
    metadata,
    Column("pipeline", String(256), primary_key=True),
    Column("stage", String(256), primary_key=True),
    Column("paused", Boolean, nullable=False),
    Column("reason", Text),
    Column("actor", String(256)),
    Column("max_running", Integer),
    Column("updated_at", Float, nullable=False),
)

# --- the dashboard's indexes (migration 0005; see store/dashboard.py) ------------------------------------
# Throughput and error rate per stage over the last hour, from the index alone.
Index("ix_runs_ended", runs.c.ended_at, runs.c.stage, runs.c.status)
# Error groups over any window, of one stage or all: only runs that ended with an error. The partial
# conditions are spelled as the queries spell them (SQLite uses a partial index only for a matching one).
Index(
    "ix_runs_failed_ended",
    runs.c.ended_at,
    runs.c.error_fingerprint,
    runs.c.item_id,
    runs.c.stage,
    sqlite_where=runs.c.error_fingerprint.is_not(None),
    postgresql_where=runs.c.error_fingerprint.is_not(None),
)
# One error group's latest failure, sparkline and videos, from the index alone.
Index(
    "ix_runs_failed_fingerprint",
    runs.c.error_fingerprint,
    runs.c.ended_at,
    runs.c.item_id,
    sqlite_where=runs.c.error_fingerprint.is_not(None),
    postgresql_where=runs.c.error_fingerprint.is_not(None),
)
# The runs in flight, longest running first: only the running ones.
Index(
    "ix_runs_running",
    runs.c.started_at,
    runs.c.run_id,
    sqlite_where=runs.c.status == "running",
    postgresql_where=runs.c.status == "running",
)
# Stuck items per stage: only the stuck ones.
Index(
    "ix_items_stuck",
    items.c.pipeline,
    items.c.stage,
    sqlite_where=items.c.stuck.is_(True),
    postgresql_where=items.c.stuck.is_(True),
)
