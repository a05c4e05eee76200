"""alert states, silences, notification outbox and delivery attempts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 11:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Placeholder slot reserved for the alerts work; it creates nothing yet.
def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
