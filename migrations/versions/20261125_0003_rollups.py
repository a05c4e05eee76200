"""per-minute and per-hour rollups of probe results

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 11:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "probe_rollups",
        sa.Column("resolution_s", sa.Integer(), nullable=False),
        sa.Column("probe", sa.String(length=200), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        # Migrations do not import the models; UTCDateTime is a DateTime(timezone=True) underneath.
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("results", sa.Integer(), nullable=False),
        sa.Column("ok_count", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("truncated", sa.Integer(), nullable=False),
        sa.Column("check_failures", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("resolution_s", "probe", "target", "bucket_start", name=op.f("pk_probe_rollups")),
    )
    op.create_index("ix_probe_rollups_resolution_s_bucket_start", "probe_rollups", ["resolution_s", "bucket_start"])


def downgrade() -> None:
    op.drop_index("ix_probe_rollups_resolution_s_bucket_start", table_name="probe_rollups")
    op.drop_table("probe_rollups")
