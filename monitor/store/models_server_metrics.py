"""The `server_metrics` table: one row per scrape of a target's own /metrics, as an interval.

Written by the daemon's scrape job (`load_run_id` NULL) and by the load runner's per-second scrape
(`load_run_id` set), so one table, one reader and one set of names serve the probe page, alert
rules and load reports. The value columns are `monitor.server_metrics.FIELDS`; NULL means the
server exposes no such metric, never zero. `sources` records which metric name each value was
read from (servers rename them); `error` says why a scrape gave nothing (the row is kept: a
server whose /metrics stops answering is itself worth seeing).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Double, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from monitor.store.models import NAME_MAX_CHARS, Base, UTCDateTime

__all__ = ["SCRAPE_ERROR_MAX_CHARS", "ServerMetricRow"]

SCRAPE_ERROR_MAX_CHARS = 300


class ServerMetricRow(Base):
    __tablename__ = "server_metrics"
    __table_args__ = (
        Index("ix_server_metrics_target_scraped_at", "target", "scraped_at"),
        Index("ix_server_metrics_load_run_id", "load_run_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    scraped_at: Mapped[datetime] = mapped_column(UTCDateTime())
    interval_s: Mapped[float | None] = mapped_column(Double())
    load_run_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("load_runs.id", ondelete="CASCADE"))
    error: Mapped[str | None] = mapped_column(String(SCRAPE_ERROR_MAX_CHARS))
    sources: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    requests_waiting: Mapped[float | None] = mapped_column(Double())
    requests_running: Mapped[float | None] = mapped_column(Double())
    kv_cache_usage_ratio: Mapped[float | None] = mapped_column(Double())
    preemptions: Mapped[float | None] = mapped_column(Double())
    prefix_cache_hit_ratio: Mapped[float | None] = mapped_column(Double())
    prompt_tokens_per_s: Mapped[float | None] = mapped_column(Double())
    generation_tokens_per_s: Mapped[float | None] = mapped_column(Double())
    server_ttft_ms_mean: Mapped[float | None] = mapped_column(Double())
    server_ttft_ms_p95: Mapped[float | None] = mapped_column(Double())
    server_itl_ms_mean: Mapped[float | None] = mapped_column(Double())
    server_itl_ms_p95: Mapped[float | None] = mapped_column(Double())
    server_e2e_ms_p95: Mapped[float | None] = mapped_column(Double())
    server_queue_ms_p95: Mapped[float | None] = mapped_column(Double())
