"""drop ix_runs_fingerprint: ix_runs_failed_fingerprint serves every query it served

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 19:00:00.000000

``ix_runs_fingerprint`` (error_fingerprint) predates 0005's partial ``ix_runs_failed_fingerprint``
(error_fingerprint, ended_at, item_id) WHERE error_fingerprint IS NOT NULL. Every query by fingerprint
compares it to a value, which implies the partial index's condition, so the old index only cost an
update on every run upsert of ingest.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_runs_fingerprint", table_name="runs")


def downgrade() -> None:
    op.create_index("ix_runs_fingerprint", "runs", ["error_fingerprint"])
