"""stage overrides: an operator's pause of a stage, and a cap on its runs at once

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stage_overrides",
        sa.Column("pipeline", sa.String(256), primary_key=True),
        sa.Column("stage", sa.String(256), primary_key=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("actor", sa.String(256)),
        sa.Column("max_running", sa.Integer()),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stage_overrides")
