"""probe_results: source (daemon or one-shot), load_run_id to load_runs, sanitised text

Where a result came from (the daemon or a one-shot command), which load run it belongs to, and
whether the server's text had to be cleaned (sanitised); the upgrade log shows the first line only.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FK = "fk_probe_results_load_run_id_load_runs"


def upgrade() -> None:
    # Until now nothing enforced the link, so a run id may point at no run; the constraint would
    # refuse those rows. Forget the link, as ON DELETE SET NULL would have done.
    op.execute(
        "UPDATE probe_results SET load_run_id = NULL "
        "WHERE load_run_id IS NOT NULL AND load_run_id NOT IN (SELECT id FROM load_runs)"
    )
    # Batch mode: SQLite cannot add a foreign key to an existing table, so the table is rebuilt there.
    with op.batch_alter_table("probe_results") as batch:
        # Every row written so far came from the daemon as far as anyone can tell.
        batch.add_column(sa.Column("source", sa.String(length=16), server_default="daemon", nullable=False))
        # Rows written before this were not marked; false is what they claimed.
        batch.add_column(sa.Column("sanitised", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.create_foreign_key(_FK, "load_runs", ["load_run_id"], ["id"], ondelete="SET NULL")
    op.create_index("ix_probe_results_source_started_at", "probe_results", ["source", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_probe_results_source_started_at", table_name="probe_results")
    with op.batch_alter_table("probe_results") as batch:
        batch.drop_constraint(_FK, type_="foreignkey")
        batch.drop_column("sanitised")
        batch.drop_column("source")
