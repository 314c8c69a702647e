"""the control plane: work, leases, limits, dead letters, cancellations, audit, tokens, dependencies

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 16:00:00.000000

See store/schema.py for what each table is for.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.String(length=256).with_variant(sa.String(length=256, collation="C"), "postgresql")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("items", sa.Column("control", _JSON, nullable=True))
    op.create_table(
        "work",
        sa.Column("pipeline", sa.String(256), primary_key=True),
        sa.Column("stage", sa.String(256), primary_key=True),
        sa.Column("work_key", _ID, primary_key=True),
        sa.Column("item_id", _ID, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("run_id", _ID),
        sa.Column("next_attempt_at", sa.Float()),
        sa.Column("last_error", _JSON),
        sa.Column("payload", _JSON),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_work_item", "work", ["item_id"])
    op.create_table(
        "leases",
        sa.Column("run_id", _ID, primary_key=True),
        sa.Column("pipeline", sa.String(256), nullable=False),
        sa.Column("stage", sa.String(256), nullable=False),
        sa.Column("work_key", _ID, nullable=False),
        sa.Column("item_id", _ID, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(256)),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("deadline", sa.Float(), nullable=False),
        sa.Column("stop_reason", sa.Text()),
        sa.Column("stuck", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_leases_expires", "leases", ["expires_at"])
    op.create_index("ix_leases_item", "leases", ["item_id"])
    op.create_table(
        "lease_slots",
        sa.Column("slot", sa.String(512), primary_key=True),
        sa.Column("run_id", _ID, primary_key=True),
    )
    op.create_index("ix_lease_slots_run", "lease_slots", ["run_id"])
    op.create_table(
        "rate_hits",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("slot", sa.String(512), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("run_id", _ID, nullable=False),
    )
    op.create_index("ix_rate_hits_slot_at", "rate_hits", ["slot", "at"])
    op.create_table(
        "dead_letters",
        sa.Column("id", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(256), nullable=False),
        sa.Column("stage", sa.String(256), nullable=False),
        sa.Column("work_key", _ID, nullable=False),
        sa.Column("item_id", _ID, nullable=False),
        sa.Column("payload", _JSON),
        sa.Column("error", _JSON),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("resolved_at", sa.Float()),
        sa.Column("resolved_by", sa.String(256)),
        sa.Column("replays", sa.Integer(), nullable=False),
    )
    op.create_index("ix_dead_letters_status_created", "dead_letters", ["status", "created_at"])
    op.create_index("ix_dead_letters_item", "dead_letters", ["item_id"])
    op.create_index(
        "ux_dead_letters_open_work",
        "dead_letters",
        ["pipeline", "stage", "work_key"],
        unique=True,
        sqlite_where=sa.text("status = 'open'"),
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_table(
        "cancellations",
        sa.Column("item_id", _ID, primary_key=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", _ID),
        sa.Column("params", _JSON),
        sa.Column("reason", sa.Text()),
        sa.Column("source", sa.String(256)),
    )
    for name, columns in (
        ("ix_audit_at", ["at"]),
        ("ix_audit_target_at", ["target", "at"]),
        ("ix_audit_action_at", ["action", "at"]),
        ("ix_audit_actor_at", ["actor", "at"]),
    ):
        op.create_index(name, "audit", columns)
    op.create_table(
        "tokens",
        sa.Column("id", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(256), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("scopes", _JSON, nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(256)),
        sa.Column("revoked_at", sa.Float()),
        sa.Column("last_used_at", sa.Float()),
    )
    op.create_table(
        "dependencies",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("since", sa.Float(), nullable=False),
        sa.Column("checked_at", sa.Float()),
        sa.Column("next_probe_at", sa.Float()),
        sa.Column("message", sa.Text()),
    )


def downgrade() -> None:
    for table in (
        "dependencies", "tokens", "audit", "cancellations", "dead_letters", "rate_hits", "lease_slots",
        "leases", "work",
    ):  # fmt: skip
        op.drop_table(table)
    op.drop_column("items", "control")
