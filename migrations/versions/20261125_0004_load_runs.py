"""load-test runs and their per-second series

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 11:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Placeholder slot reserved for the load-test work; it creates nothing yet.
def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
