"""Where rule inputs come from: window aggregates of a metric, and the recent raw history of a probe.

What one stored result contributes to each metric, and which results count, is the metric
catalogue's (`monitor.metric_catalog`): a distribution is one value per answered result (no
error_kind); a rate counts hits over every result (`error_rate`) or over the answered ones.

`agg` is then taken over those per-result values: mean, p50/p95/p99, max, min, or rate (the share
of hits). Three window sources read them, all through `monitor.store.trend.TrendReader`:

- `RawWindowSource`: raw rows, exact (percentiles by linear interpolation);
- `RollupWindowSource`: rollups plus the raw tail the rollup job may still revise, for long windows
  (regression baselines over days); quantiles carry the histograms' 2 % relative error;
- `TieredWindowSource`: the first for windows up to an hour, the second for longer ones.

Server metrics (the catalogue's kind `server`) are not probe results: `ServerWindowSource` answers
them from the probe's target's stored scrapes (`server_metrics`), one value per scrape, and passes
every other metric on to the source it wraps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.config import Settings
from monitor.metric_catalog import metric as metric_def
from monitor.results import percentile
from monitor.store.bucket import Bucket
from monitor.store.models import DAEMON_RESULTS, ProbeResultRow
from monitor.store.server_metrics_repo import ServerMetricsStore
from monitor.store.trend import TrendReader

__all__ = [
    "Aggregate",
    "RawWindowSource",
    "RecentResult",
    "ResultHistory",
    "RollupWindowSource",
    "ServerWindowSource",
    "TieredWindowSource",
    "WindowSource",
    "aggregate_values",
    "bucket_aggregate",
]


@dataclass(frozen=True, slots=True)
class Aggregate:
    """An aggregate over a window: None when no result contributed (`count` is 0)."""

    value: float | None
    count: int


class WindowSource(Protocol):
    async def aggregate(
        self, *, metric: str, agg: str, probe: str, since: datetime, until: datetime, check: str | None = None
    ) -> Aggregate:
        """`agg` of `metric` over the results of `probe` with since <= started_at < until."""
        ...


def aggregate_values(values: list[float], agg: str) -> float | None:
    """Reduce per-result values; None for no values."""
    if not values:
        return None
    if agg in ("mean", "rate"):
        return sum(values) / len(values)
    if agg == "max":
        return max(values)
    if agg == "min":
        return min(values)
    if agg in ("p50", "p95", "p99"):
        return percentile(values, float(agg[1:]))
    raise ValueError(f"unknown aggregation {agg!r}")


def bucket_aggregate(bucket: Bucket, *, metric: str, agg: str, check: str | None = None) -> Aggregate:
    """`agg` of `metric` over a bucket; a rate is the bucket's own (`Bucket.rate`), derived in one place."""
    if metric_def(metric).kind == "distribution":
        hist = bucket.metrics.get(metric)
        if hist is None or not hist.count:
            return Aggregate(None, 0)
        return Aggregate(hist.stat(agg), hist.count)
    # The mean of a rate's 0/1 values is the rate; config allows only `rate`, older callers said `mean`.
    if agg not in ("rate", "mean"):
        raise ValueError(f"{metric} is a rate: use agg rate")
    return Aggregate(bucket.rate(metric, check), bucket.count(metric))


class RawWindowSource:
    """Aggregates computed from raw `probe_results` rows (one indexed range scan per call).

    Distributions are exact: the window's values are read and reduced by `aggregate_values`.
    Rates come from a bucket of the window's results, like every other reader's.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._reader = TrendReader(sessionmaker)

    async def aggregate(
        self, *, metric: str, agg: str, probe: str, since: datetime, until: datetime, check: str | None = None
    ) -> Aggregate:
        if metric_def(metric).kind == "distribution":
            values = await self._reader.raw_values(metric, probe=probe, since=since, until=until)
            return Aggregate(aggregate_values(values, agg), len(values))
        bucket = await self._reader.raw_window(probe=probe, since=since, until=until)
        return bucket_aggregate(bucket, metric=metric, agg=agg, check=check)


class RollupWindowSource:
    """A `WindowSource` for long windows (regression baselines over days): rollups plus a raw tail.

    Buckets older than the rollup job's settle time are read from rollups; the last few minutes,
    which the job may still revise, are summarised from raw rows (`TrendReader.window`). Quantiles
    carry the histograms' 2 % relative error; counts, rates, means, min and max are exact (the
    window's first minute is counted whole).
    """

    def __init__(self, reader: TrendReader) -> None:
        self._reader = reader

    async def aggregate(
        self, *, metric: str, agg: str, probe: str, since: datetime, until: datetime, check: str | None = None
    ) -> Aggregate:
        # Only the rule's own distribution is decoded: a week of minute rows holds four each.
        wanted = (metric,) if metric_def(metric).kind == "distribution" else ()
        bucket = await self._reader.window(since=since, until=until, probe=probe, metrics=wanted)
        return bucket_aggregate(bucket, metric=metric, agg=agg, check=check)


class TieredWindowSource:
    """Raw results for windows up to `raw_max_s`, rollups (with a raw tail) for longer ones."""

    def __init__(self, raw: WindowSource, rollups: WindowSource, *, raw_max_s: float = 3600.0) -> None:
        self._raw = raw
        self._rollups = rollups
        self._raw_max_s = raw_max_s

    async def aggregate(
        self, *, metric: str, agg: str, probe: str, since: datetime, until: datetime, check: str | None = None
    ) -> Aggregate:
        long = (until - since).total_seconds() > self._raw_max_s
        source = self._rollups if long else self._raw
        return await source.aggregate(metric=metric, agg=agg, probe=probe, since=since, until=until, check=check)


class ServerWindowSource:
    """Server metrics from the scrapes of the probe's target; any other metric from `inner`.

    `agg` is taken over the window's scrapes (one value each; a scrape that did not expose the
    value does not count), so `min_samples` counts scrapes. A probe whose target is not scraped
    has no values: the condition never holds. `settings` is read per call (reloads). Windows up to
    `raw_max_s` reduce the raw values (exact); longer ones read rollups, as `TieredWindowSource` does.
    """

    def __init__(
        self,
        inner: WindowSource,
        store: ServerMetricsStore,
        settings: Callable[[], Settings],
        *,
        raw_max_s: float = 3600.0,
    ) -> None:
        self._inner = inner
        self._store = store
        self._settings = settings
        self._raw_max_s = raw_max_s

    async def aggregate(
        self, *, metric: str, agg: str, probe: str, since: datetime, until: datetime, check: str | None = None
    ) -> Aggregate:
        definition = metric_def(metric)
        if definition.kind != "server":
            return await self._inner.aggregate(
                metric=metric, agg=agg, probe=probe, since=since, until=until, check=check
            )
        target = next((p.target for p in self._settings().probes if p.name == probe), None)
        if target is None:
            return Aggregate(None, 0)
        if (until - since).total_seconds() <= self._raw_max_s:
            values = await self._store.values(definition.column, target, since=since, until=until)
            return Aggregate(aggregate_values(values, agg), len(values))
        # Longer windows read the scrapes' rollups (they outlive the raw scrapes); quantiles as histograms give them.
        hist = await self._store.window(definition.column, target, since=since, until=until)
        if hist is None:
            return Aggregate(None, 0)
        return Aggregate(hist.stat(agg), hist.count)


@dataclass(frozen=True, slots=True)
class RecentResult:
    started_at: datetime
    ok: bool
    error_kind: str | None
    error_detail: str | None
    failed_checks: str

    def describe_failure(self) -> str:
        """A one-line reason (it may quote the target's own text: formats escape it)."""
        if self.error_kind is not None:
            return f"{self.error_kind}: {self.error_detail}" if self.error_detail else self.error_kind
        if self.failed_checks:
            return f"failed checks: {self.failed_checks.replace(',', ', ')}"
        return ""


class ResultHistory:
    """The raw queries absence and consecutive-failure rules need (always recent rows, always indexed)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def latest(self, probe: str, limit: int, *, until: datetime | None = None) -> list[RecentResult]:
        """The newest `limit` results of `probe` (started before `until`), newest first."""
        query = select(
            ProbeResultRow.started_at,
            ProbeResultRow.ok,
            ProbeResultRow.error_kind,
            ProbeResultRow.error_detail,
            ProbeResultRow.failed_checks,
        ).where(DAEMON_RESULTS, ProbeResultRow.probe == probe)
        if until is not None:
            query = query.where(ProbeResultRow.started_at <= until)
        query = query.order_by(ProbeResultRow.started_at.desc(), ProbeResultRow.id.desc()).limit(limit)
        async with self._sessionmaker() as session:
            rows = (await session.execute(query)).all()
        return [RecentResult(r[0], bool(r[1]), r[2], r[3], r[4]) for r in rows]

    async def last_ok_at(self, probe: str, *, until: datetime | None = None) -> datetime | None:
        """When `probe` last produced an ok result (None if never)."""
        query = select(ProbeResultRow.started_at).where(
            DAEMON_RESULTS, ProbeResultRow.probe == probe, ProbeResultRow.ok.is_(True)
        )
        if until is not None:
            query = query.where(ProbeResultRow.started_at <= until)
        # ORDER BY ... LIMIT 1 walks the (probe, started_at) index backwards on both backends.
        query = query.order_by(ProbeResultRow.started_at.desc()).limit(1)
        async with self._sessionmaker() as session:
            return (await session.execute(query)).scalar_one_or_none()
