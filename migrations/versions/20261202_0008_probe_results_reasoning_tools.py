"""probe_results: time to the first answer token, reasoning tokens, tool calls

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode, as in 0006: SQLite rebuilds the table where it cannot alter it in place.
    # Results stored before this were not split: NULL says "not measured", not "no reasoning".
    with op.batch_alter_table("probe_results") as batch:
        batch.add_column(sa.Column("ttfa_ms", sa.Double(), nullable=True))
        batch.add_column(sa.Column("reasoning_tokens", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("reasoning_tokens_estimated", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("tool_call_count", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("probe_results") as batch:
        batch.drop_column("tool_call_count")
        batch.drop_column("reasoning_tokens_estimated")
        batch.drop_column("reasoning_tokens")
        batch.drop_column("ttfa_ms")
