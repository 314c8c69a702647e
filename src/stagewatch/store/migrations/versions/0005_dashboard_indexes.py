"""dashboard indexes: runs by end time, failed runs, running runs, stuck items

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 18:00:00.000000

What the dashboard's read models need (store/dashboard.py) to stay fast at 1,000,000 events:

- ``ix_runs_ended`` (ended_at, stage, status): throughput and error rate per stage over the last hour
  come from this index alone, never from the table.
- ``ix_runs_failed_ended`` (ended_at, error_fingerprint, item_id, stage) and
  ``ix_runs_failed_fingerprint`` (error_fingerprint, ended_at, item_id), on runs that ended with an
  error only (a few percent of runs): error groups over a window, of one stage or all, from the first;
  one group's latest failure, sparkline and videos from the second, without reading the table.
- ``ix_runs_running`` (started_at, run_id) on running runs only: the in-flight page, longest running
  first, without sorting every running run.
- ``ix_items_stuck`` (pipeline, stage) on stuck items only: the per-stage stuck counts.

The partial indexes' conditions are written as the queries spell them (SQLite uses a partial index
only when the query's condition matches its own).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_runs_ended", "runs", ["ended_at", "stage", "status"])
    failed = sa.text("error_fingerprint IS NOT NULL")
    op.create_index(
        "ix_runs_failed_ended",
        "runs",
        ["ended_at", "error_fingerprint", "item_id", "stage"],
        sqlite_where=failed,
        postgresql_where=failed,
    )
    op.create_index(
        "ix_runs_failed_fingerprint",
        "runs",
        ["error_fingerprint", "ended_at", "item_id"],
        sqlite_where=failed,
        postgresql_where=failed,
    )
    running = sa.text("status = 'running'")
    op.create_index(
        "ix_runs_running", "runs", ["started_at", "run_id"], sqlite_where=running, postgresql_where=running
    )
    op.create_index(
        "ix_items_stuck",
        "items",
        ["pipeline", "stage"],
        sqlite_where=sa.text("stuck IS 1"),
        postgresql_where=sa.text("stuck IS true"),
    )


def downgrade() -> None:
    op.drop_index("ix_items_stuck", table_name="items")
    op.drop_index("ix_runs_running", table_name="runs")
    op.drop_index("ix_runs_failed_fingerprint", table_name="runs")
    op.drop_index("ix_runs_failed_ended", table_name="runs")
    op.drop_index("ix_runs_ended", table_name="runs")
