"""scheduled doctor reports: one row per check per run

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "doctor_runs",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("max_model_len", sa.Integer(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(300), nullable=True),
    )
    op.create_index("ix_doctor_runs_target_started_at", "doctor_runs", ["target", "started_at"])
    op.create_table(
        "doctor_findings",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.BigInteger(), sa.ForeignKey("doctor_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("check_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("summary", sa.String(500), nullable=False),
        sa.Column("fix", sa.String(2000), nullable=True),
        sa.Column("request", sa.String(500), nullable=False),
        sa.Column("response_excerpt", sa.String(500), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
    )
    op.create_index("ix_doctor_findings_run_id", "doctor_findings", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_doctor_findings_run_id", "doctor_findings")
    op.drop_table("doctor_findings")
    op.drop_index("ix_doctor_runs_target_started_at", "doctor_runs")
    op.drop_table("doctor_runs")
