"""load-test runs and their per-second series

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 11:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, nullable: bool = True) -> sa.Column[object]:
    # Migrations do not import the models; UTCDateTime is a DateTime(timezone=True) underneath.
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "load_runs",
        sa.Column("id", _ID, nullable=False),
        _ts("started_at", nullable=False),
        _ts("ended_at"),
        _ts("heartbeat_at", nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("slo", sa.JSON(), nullable=False),
        sa.Column("verdict", sa.String(length=8), nullable=True),
        sa.Column("baseline_id", _ID, nullable=True),
        sa.Column("abort_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["baseline_id"], ["load_runs.id"], name=op.f("fk_load_runs_baseline_id_load_runs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_load_runs")),
    )
    op.create_index("ix_load_runs_started_at", "load_runs", ["started_at"])
    op.create_index("ix_load_runs_status", "load_runs", ["status"])
    op.create_table(
        "load_series",
        sa.Column("run_id", _ID, nullable=False),
        sa.Column("t_s", sa.Integer(), nullable=False),
        _ts("ts", nullable=False),
        sa.Column("users", sa.Integer(), nullable=True),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("truncated", sa.Integer(), nullable=False),
        sa.Column("ttft_p50_ms", sa.Double(), nullable=True),
        sa.Column("ttft_p95_ms", sa.Double(), nullable=True),
        sa.Column("itl_p50_ms", sa.Double(), nullable=True),
        sa.Column("itl_p95_ms", sa.Double(), nullable=True),
        sa.Column("e2e_p50_ms", sa.Double(), nullable=True),
        sa.Column("e2e_p95_ms", sa.Double(), nullable=True),
        sa.Column("lag_p95_ms", sa.Double(), nullable=True),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["load_runs.id"], name=op.f("fk_load_series_run_id_load_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "t_s", name=op.f("pk_load_series")),
    )


def downgrade() -> None:
    op.drop_table("load_series")
    op.drop_index("ix_load_runs_status", table_name="load_runs")
    op.drop_index("ix_load_runs_started_at", table_name="load_runs")
    op.drop_table("load_runs")
