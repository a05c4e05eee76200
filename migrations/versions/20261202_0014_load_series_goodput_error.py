"""load_series: per-second goodput and the generator's own timing error

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("load_series") as batch:
        # Requests that met every --goodput clause, of those judged (0 judged: no clauses given).
        batch.add_column(sa.Column("good", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("goodput_judged", sa.Integer(), server_default="0", nullable=False))
        # The generator's own timing error in that second; NULL: not measured (older runs, no reads).
        batch.add_column(sa.Column("read_lag_p99_ms", sa.Double(), nullable=True))
        batch.add_column(sa.Column("ttft_err_p99_ms", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("load_series") as batch:
        batch.drop_column("ttft_err_p99_ms")
        batch.drop_column("read_lag_p99_ms")
        batch.drop_column("goodput_judged")
        batch.drop_column("good")
