"""the server's own /metrics samples and their rollups

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# monitor.server_metrics.FIELDS as of this revision (migrations are frozen: they import no models).
_FIELDS = (
    "requests_waiting", "requests_running", "kv_cache_usage_ratio", "preemptions", "prefix_cache_hit_ratio",
    "prompt_tokens_per_s", "generation_tokens_per_s", "server_ttft_ms_mean", "server_ttft_ms_p95",
    "server_itl_ms_mean", "server_itl_ms_p95", "server_e2e_ms_p95", "server_queue_ms_p95",
)  # fmt: skip

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "server_metrics",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("scraped_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("interval_s", sa.Double(), nullable=True),
        sa.Column("load_run_id", sa.BigInteger(), sa.ForeignKey("load_runs.id", ondelete="CASCADE"), nullable=True),
        sa.Column("error", sa.String(300), nullable=True),
        sa.Column("sources", sa.JSON(), nullable=True),
        *(sa.Column(name, sa.Double(), nullable=True) for name in _FIELDS),
    )
    op.create_index("ix_server_metrics_target_scraped_at", "server_metrics", ["target", "scraped_at"])
    op.create_index("ix_server_metrics_load_run_id", "server_metrics", ["load_run_id"])


def downgrade() -> None:
    op.drop_index("ix_server_metrics_load_run_id", "server_metrics")
    op.drop_index("ix_server_metrics_target_scraped_at", "server_metrics")
    op.drop_table("server_metrics")
