"""The `server_metrics` table: one row per scrape of a target's own /metrics, as an interval.

Written by the daemon's scrape job (`load_run_id` NULL) and by the load runner's per-second scrape
(`load_run_id` set), so one table, one reader and one set of names serve the probe page, alert
rules and load reports. The value columns are `monitor.server_metrics.FIELDS`; NULL means the
server exposes no such metric, never zero. `sources` records which metric name each value was
read from (servers rename them); `error` says why a scrape gave nothing (the row is kept: a
server whose /metrics stops answering is itself worth seeing).

`server_metric_rollups` keeps the daemon's scrapes per target and minute or hour (written by
`monitor.store.server_rollups`), so charts and alert windows outlive the raw retention.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Double, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from monitor.store.models import NAME_MAX_CHARS, Base, UTCDateTime

__all__ = ["SCRAPE_ERROR_MAX_CHARS", "ServerMetricRollupRow", "ServerMetricRow"]

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


class ServerMetricRollupRow(Base):
    """The daemon's scrapes of one target in one minute or hour."""

    __tablename__ = "server_metric_rollups"
    __table_args__ = (
        # Retention deletes whole resolutions by age.
        Index("ix_server_metric_rollups_resolution_s_bucket_start", "resolution_s", "bucket_start"),
    )

    resolution_s: Mapped[int] = mapped_column(Integer, primary_key=True)
    target: Mapped[str] = mapped_column(String(NAME_MAX_CHARS), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    scrapes: Mapped[int]
    # Scrapes that gave no values (`error` set).
    errors: Mapped[int]
    # {"field": `Histogram.to_json`} per FIELD some scrape exposed; a field never exposed is absent (NULL, not 0).
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
