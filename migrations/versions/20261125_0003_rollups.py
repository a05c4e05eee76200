"""per-minute and per-hour rollups of probe results

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 11:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Placeholder slot reserved for the daemon (rollups/retention) work; it creates nothing yet.
def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
