"""load_series: time to the first answer token (p50, p95) and reasoning tokens per second

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode, as in 0006: SQLite rebuilds the table where it cannot alter it in place.
    with op.batch_alter_table("load_series") as batch:
        # Seconds recorded before this were not split: NULL says "not measured", not "no answer".
        batch.add_column(sa.Column("ttfa_p50_ms", sa.Double(), nullable=True))
        batch.add_column(sa.Column("ttfa_p95_ms", sa.Double(), nullable=True))
        batch.add_column(sa.Column("reasoning_tokens", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("load_series") as batch:
        batch.drop_column("reasoning_tokens")
        batch.drop_column("ttfa_p95_ms")
        batch.drop_column("ttfa_p50_ms")
