"""deployment fingerprints and their accepted baselines

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fingerprints",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("component", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("error", sa.String(300), nullable=True),
    )
    op.create_index("ix_fingerprints_target_taken_at", "fingerprints", ["target", "taken_at"])
    op.create_table(
        "fingerprint_baselines",
        sa.Column("target", sa.String(200), primary_key=True),
        sa.Column("component", sa.String(40), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_by", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("fingerprint_baselines")
    op.drop_index("ix_fingerprints_target_taken_at", "fingerprints")
    op.drop_table("fingerprints")
