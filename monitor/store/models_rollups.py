"""Tables of the rollups feature: per-minute and per-hour summaries of `probe_results`.

One row per (resolution, probe, target, bucket). A rate's hits are plain count columns (the
catalogue's `count`, `monitor.metric_catalog`) so they can be summed in SQL; every distribution of
the catalogue lives in `metrics` under its name as a mergeable log-bucket histogram (see
`monitor.store.bucket.Histogram`), so a new distribution needs no migration and percentiles over
any span of buckets are exact to the histogram's relative accuracy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from monitor.store.models import NAME_MAX_CHARS, Base, UTCDateTime

__all__ = ["FLEET", "HOUR_S", "MINUTE_S", "ProbeRollupRow"]

MINUTE_S = 60
HOUR_S = 3600
# Hour rows with probe = target = FLEET merge every probe of that hour, so a fleet-wide trend reads
# one row per hour instead of one per probe. Config names cannot be empty, so it never collides.
FLEET = ""


class ProbeRollupRow(Base):
    """Summary of one probe's results on one target in one minute or hour."""

    __tablename__ = "probe_rollups"
    __table_args__ = (
        # Retention deletes whole resolutions by age.
        Index("ix_probe_rollups_resolution_s_bucket_start", "resolution_s", "bucket_start"),
    )

    resolution_s: Mapped[int] = mapped_column(Integer, primary_key=True)
    probe: Mapped[str] = mapped_column(String(NAME_MAX_CHARS), primary_key=True)
    target: Mapped[str] = mapped_column(String(NAME_MAX_CHARS), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    results: Mapped[int]
    ok_count: Mapped[int]
    # Requests that failed outright (error_kind set), apart from failed checks.
    errors: Mapped[int]
    truncated: Mapped[int]
    # {"check name": number of results where it failed}
    check_failures: Mapped[dict[str, int]] = mapped_column(JSON)
    # {"latency_ms": {"n", "s", "lo", "hi", "z", "o", "c"}, ...}: `Histogram.to_json` per distribution
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
