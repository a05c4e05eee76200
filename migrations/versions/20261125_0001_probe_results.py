"""probe_results: one row per probe request

Revision ID: 0001
Revises:
Create Date: 2026-11-25 10:37:43
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "probe_results",
        # SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        # Migrations do not import the models; UTCDateTime is a DateTime(timezone=True) underneath.
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("probe", sa.String(length=200), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("endpoint", sa.String(length=16), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error_kind", sa.String(length=32), nullable=True),
        sa.Column("error_detail", sa.Text(), nullable=True),
        sa.Column("timeout_phase", sa.String(length=16), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("ttft_ms", sa.Double(), nullable=True),
        sa.Column("latency_ms", sa.Double(), nullable=True),
        sa.Column("itl_ms_mean", sa.Double(), nullable=True),
        sa.Column("itl_ms_p95", sa.Double(), nullable=True),
        sa.Column("itl_ms_max", sa.Double(), nullable=True),
        sa.Column("chunk_count", sa.Integer(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("tokens_estimated", sa.Boolean(), nullable=True),
        sa.Column("finish_reason", sa.String(length=200), nullable=True),
        sa.Column("stop_reason", sa.String(length=200), nullable=True),
        sa.Column("max_tokens", sa.Integer(), nullable=True),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("text_sample", sa.Text(), nullable=True),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("failed_checks", sa.String(), nullable=False),
        sa.Column("load_run_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_probe_results")),
    )
    op.create_index("ix_probe_results_probe_started_at", "probe_results", ["probe", "started_at"])
    op.create_index("ix_probe_results_target_started_at", "probe_results", ["target", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_probe_results_target_started_at", table_name="probe_results")
    op.drop_index("ix_probe_results_probe_started_at", table_name="probe_results")
    op.drop_table("probe_results")
