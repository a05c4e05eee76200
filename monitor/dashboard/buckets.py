"""The overview's statistics per probe: its last hour, last day and sparkline, from the trend reader.

Every number comes from `monitor.store.trend.TrendReader` (rollups up to the watermark, raw
results after it), the reader the API's trends, the probe page and the alert windows use too;
this module only adds what the overview draws: one p95 latency per minute of the last hour.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.store.bucket import floor_time
from monitor.store.models_rollups import MINUTE_S
from monitor.store.trend import RAW_TAIL_MAX_S, Key, Recent, Segment, TrendReader, plan

# The planner's names, where the dashboard's tests have always found them.
__all__ = ["RAW_TAIL_MAX_S", "Key", "OverviewBuckets", "Segment", "plan", "read_overview"]


@dataclass(slots=True)
class OverviewBuckets(Recent):
    """One probe on the overview: its `Recent` buckets (`last` holds `last_columns`) and its sparkline."""

    # p95 latency of each minute of the last hour, oldest first (None: no answer that minute).
    spark_latency_p95_ms: list[float | None] = field(default_factory=list)

    def fill_spark(self, first: datetime, steps: int) -> None:
        self.spark_latency_p95_ms = []
        for i in range(steps):
            bucket = self.minutes.get(first + timedelta(seconds=MINUTE_S * i))
            self.spark_latency_p95_ms.append(bucket.summary("latency_ms").p95 if bucket is not None else None)


async def read_overview(
    sessionmaker: async_sessionmaker[AsyncSession],
    now: datetime,
    *,
    metrics: Collection[str],
    spark_steps: int = 60,
    last_columns: Sequence[Any] = (),
) -> dict[Key, OverviewBuckets]:
    """Every probe's last hour and last day (`TrendReader.recent`), with its sparkline filled in."""
    recent = await TrendReader(sessionmaker).recent(now, metrics=metrics, extra=last_columns)
    spark_first = floor_time(now, MINUTE_S) - timedelta(seconds=MINUTE_S * (spark_steps - 1))
    out: dict[Key, OverviewBuckets] = {}
    for key, r in recent.items():
        probe = out[key] = OverviewBuckets(hour=r.hour, day=r.day, minutes=r.minutes, last=r.last)
        probe.fill_spark(spark_first, spark_steps)
    return out
