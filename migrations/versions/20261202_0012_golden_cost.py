"""probe_results: golden-answer similarity and cost

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("golden_similarity", "golden_method", "golden_passed", "cost", "cost_currency")


def upgrade() -> None:
    # Nullable columns only: existing rows have no golden answer and no price.
    with op.batch_alter_table("probe_results") as batch:
        batch.add_column(sa.Column("golden_similarity", sa.Double(), nullable=True))
        batch.add_column(sa.Column("golden_method", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("golden_passed", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("cost", sa.Double(), nullable=True))
        batch.add_column(sa.Column("cost_currency", sa.String(length=3), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("probe_results") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
