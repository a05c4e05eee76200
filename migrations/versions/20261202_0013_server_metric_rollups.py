"""server_metric_rollups: per-minute and per-hour summaries of the daemon's scrapes

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "server_metric_rollups",
        sa.Column("resolution_s", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        # Migrations do not import the models; UTCDateTime is a DateTime(timezone=True) underneath.
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scrapes", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("resolution_s", "target", "bucket_start", name=op.f("pk_server_metric_rollups")),
    )
    op.create_index(
        "ix_server_metric_rollups_resolution_s_bucket_start",
        "server_metric_rollups",
        ["resolution_s", "bucket_start"],
    )


def downgrade() -> None:
    op.drop_index("ix_server_metric_rollups_resolution_s_bucket_start", table_name="server_metric_rollups")
    op.drop_table("server_metric_rollups")
