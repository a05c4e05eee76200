"""Per-minute and per-hour rollups of probe results, and the trend queries that read them.

The rollup job recomputes whole buckets from raw rows and upserts them, so running it twice (or
after a crash half-way) gives the same rows. Hour buckets are merged from minute buckets, which
is exact because every field is a count, a sum or a mergeable histogram. Only the daemon's results
are rolled up: those of one-shot commands (`llm-monitor probe`, `doctor`) are not part of any trend.
"""

from __future__ import annotations

import asyncio
import logging
import math
import operator
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Executable, Row, and_, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.alerts.source import Aggregate, WindowSource
from monitor.store.models import DAEMON_RESULTS, ProbeResultRow
from monitor.store.models_rollups import FLEET, HOUR_S, MINUTE_S, ProbeRollupRow

__all__ = [
    "ROLLED_METRICS",
    "Bucket",
    "Histogram",
    "MetricSummary",
    "RollupWindowSource",
    "Rollups",
    "TieredWindowSource",
    "TrendPoint",
    "bucket_aggregate",
    "floor_time",
    "with_fleet_rows",
]

logger = logging.getLogger(__name__)

# Distributions kept per bucket; itl_ms is each result's mean inter-token gap.
ROLLED_METRICS = ("latency_ms", "ttft_ms", "itl_ms", "completion_tokens")
_RAW_COLUMNS = {
    "latency_ms": ProbeResultRow.latency_ms,
    "ttft_ms": ProbeResultRow.ttft_ms,
    "itl_ms": ProbeResultRow.itl_ms_mean,
    "completion_tokens": ProbeResultRow.completion_tokens,
}
# Quantiles read from a histogram are within 2 % of a true sample value (DDSketch's scheme).
RELATIVE_ACCURACY = 0.02
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
# Raw rows are read in slices of this length, so a backfill never holds more than an hour in memory.
_CHUNK_S = HOUR_S


def floor_time(when: datetime, step_s: int) -> datetime:
    """`when` rounded down to a multiple of `step_s` seconds since the epoch (UTC)."""
    epoch_s = int(when.timestamp())
    return datetime.fromtimestamp(epoch_s - epoch_s % step_s, UTC)


class Histogram:
    """A mergeable log-bucket histogram: dense counts from bucket `offset` on, plus exact count, sum, min, max.

    Bucket i holds values in (gamma^(i-1), gamma^i]. Stored as JSON with short keys, because there
    is one per metric in every rollup row: `{"n", "s", "lo", "hi", "z", "o", "c"}` = count, sum,
    min, max, values <= 0, first bucket index, counts from that index on.
    """

    __slots__ = ("count", "counts", "max", "min", "offset", "sum", "zero")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.zero = 0  # values <= 0 (a reply of 0 tokens)
        self.offset = 0
        self.counts: list[int] = []

    def add(self, value: float) -> None:
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value <= 0:
            self.zero += 1
            return
        index = math.ceil(math.log(value) / _LOG_GAMMA)
        self._cover(index, index + 1)
        self.counts[index - self.offset] += 1

    def _cover(self, low: int, high: int) -> None:
        """Grow `counts` so that indexes low..high-1 exist."""
        if not self.counts:
            self.offset, self.counts = low, [0] * (high - low)
            return
        if low < self.offset:
            self.counts[:0] = [0] * (self.offset - low)
            self.offset = low
        end = self.offset + len(self.counts)
        if high > end:
            self.counts.extend([0] * (high - end))

    def merge(self, other: Histogram) -> None:
        self._merge(other.count, other.sum, other.min, other.max, other.zero, other.offset, other.counts)

    def merge_json(self, data: dict[str, Any]) -> None:
        """Merge a histogram in its stored form, without building it first (trends merge thousands)."""
        self._merge(data["n"], data["s"], data["lo"], data["hi"], data["z"], data["o"], data["c"])

    def _merge(
        self, count: int, total: float, low: float, high: float, zero: int, offset: int, counts: list[int]
    ) -> None:
        if not count:
            return
        self.count += count
        self.sum += total
        if low < self.min:
            self.min = low
        if high > self.max:
            self.max = high
        self.zero += zero
        if counts:
            self._cover(offset, offset + len(counts))
            start = offset - self.offset
            end = start + len(counts)
            # Element-wise add in C (map over two lists): trends merge tens of thousands of these.
            self.counts[start:end] = map(operator.add, self.counts[start:end], counts)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1), None when empty; clamped to the exact min and max."""
        if not self.count:
            return None
        if q <= 0 or q >= 1:
            return self.min if q <= 0 else self.max
        rank = q * (self.count - 1)
        seen = self.zero
        if rank < seen:
            return min(max(0.0, self.min), self.max)
        for i, n in enumerate(self.counts):
            seen += n
            if rank < seen:
                estimate = 2 * _GAMMA ** (self.offset + i) / (_GAMMA + 1)
                return min(max(estimate, self.min), self.max)
        return self.max

    def to_json(self) -> dict[str, Any]:
        return {"n": self.count, "s": self.sum, "lo": self.min, "hi": self.max, "z": self.zero, "o": self.offset,
                "c": self.counts}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        hist = cls()
        hist.count = data["n"]
        hist.sum = data["s"]
        hist.min = data["lo"]
        hist.max = data["hi"]
        hist.zero = data["z"]
        hist.offset = data["o"]
        hist.counts = list(data["c"])
        return hist


@dataclass(slots=True)
class Bucket:
    """Everything a rollup row holds, as mergeable Python values.

    As in the alert rules (`monitor.alerts.source`), distributions, truncations and check failures
    count only requests that got an answer (no `error_kind`); `errors` counts the others.
    """

    results: int = 0
    ok_count: int = 0
    errors: int = 0
    truncated: int = 0
    check_failures: Counter[str] = field(default_factory=Counter)
    metrics: dict[str, Histogram] = field(default_factory=dict)

    def add(
        self, *, ok: bool, error: bool, truncated: bool, failed_checks: str, values: dict[str, float | None]
    ) -> None:
        self.results += 1
        self.ok_count += ok
        if error:
            self.errors += 1
            return
        self.truncated += truncated
        if failed_checks:
            self.check_failures.update(failed_checks.split(","))
        for name, value in values.items():
            if value is not None:
                self.histogram(name).add(float(value))

    @property
    def answered(self) -> int:
        """Results without an error: the denominator of truncation and check-failure rates."""
        return self.results - self.errors

    def histogram(self, name: str) -> Histogram:
        hist = self.metrics.get(name)
        if hist is None:
            hist = self.metrics[name] = Histogram()
        return hist

    def merge(self, other: Bucket) -> None:
        self.results += other.results
        self.ok_count += other.ok_count
        self.errors += other.errors
        self.truncated += other.truncated
        self.check_failures.update(other.check_failures)
        for name, hist in other.metrics.items():
            self.histogram(name).merge(hist)

    def merge_row(self, row: ProbeRollupRow | Row[Any]) -> None:
        """Merge a stored rollup row (its histograms in their JSON form, without building them first)."""
        self.results += row.results
        self.ok_count += row.ok_count
        self.errors += row.errors
        self.truncated += row.truncated
        if row.check_failures:
            self.check_failures.update(row.check_failures)
        for name, data in row.metrics.items():
            self.histogram(name).merge_json(data)

    def to_values(self) -> dict[str, Any]:
        return {
            "results": self.results, "ok_count": self.ok_count, "errors": self.errors, "truncated": self.truncated,
            "check_failures": dict(self.check_failures),
            "metrics": {name: hist.to_json() for name, hist in self.metrics.items()},
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class MetricSummary:
    count: int
    mean: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, hist: Histogram | None) -> MetricSummary:
        if hist is None or not hist.count:
            return cls(0, None, None, None, None, None)
        return cls(hist.count, hist.mean, hist.quantile(0.5), hist.quantile(0.95), hist.quantile(0.99), hist.max)


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """One step of a trend: counts and distribution summaries from `start` for `step_s` seconds."""

    start: datetime
    results: int
    ok_count: int
    errors: int
    truncated: int
    metrics: dict[str, MetricSummary]

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.results if self.results else None

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(), "results": self.results, "ok": self.ok_count, "errors": self.errors,
            "truncated": self.truncated,
            "metrics": {name: {"count": s.count, "mean": s.mean, "p50": s.p50, "p95": s.p95, "p99": s.p99,
                               "max": s.max} for name, s in self.metrics.items()},
        }  # fmt: skip


_Key = tuple[str, str, datetime]
_K = TypeVar("_K")
_HOUR = timedelta(seconds=HOUR_S)
# Rows per fetch while streaming, and per INSERT statement: each bounds how long the loop is held.
_PARTITION_ROWS = 500
_UPSERT_ROWS = 200
_ROLLUP_COLUMNS = (
    ProbeRollupRow.probe, ProbeRollupRow.target, ProbeRollupRow.bucket_start, ProbeRollupRow.results,
    ProbeRollupRow.ok_count, ProbeRollupRow.errors, ProbeRollupRow.truncated, ProbeRollupRow.check_failures,
    ProbeRollupRow.metrics,
)  # fmt: skip


class Rollups:
    """Computes rollups from raw results and answers window and trend queries from them.

    Minute buckets are recomputed from raw rows for the last `settle_s` on every run: a result is
    stored when its request ends, up to a target timeout after the `started_at` that places it in
    a bucket. An hour bucket is written from its minute buckets once the hour is over, and rewritten
    while its minutes may still change; queries read the current hour from minutes. Rows are read
    in partitions and merged in a worker thread, so a big backfill or trend never holds up the
    event loop (and with it the probe schedule).
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, settle_s: float = 180.0) -> None:
        self._sessionmaker = sessionmaker
        self.settle_s = settle_s

    async def watermark(self) -> datetime | None:
        """Start of the newest minute bucket (None before the first run)."""
        return await self._newest(MINUTE_S)

    async def _newest(self, resolution_s: int) -> datetime | None:
        query = select(func.max(ProbeRollupRow.bucket_start)).where(ProbeRollupRow.resolution_s == resolution_s)
        async with self._sessionmaker() as session:
            value: datetime | None = (await session.execute(query)).scalar_one()
        return value

    async def run(self, now: datetime | None = None) -> int:
        """Bring rollups up to `now`; the first run backfills from the oldest raw result. Returns buckets written."""
        now = now or datetime.now(UTC)
        mark = await self.watermark()
        if mark is not None:
            start: datetime | None = mark - timedelta(seconds=self.settle_s)
        else:
            async with self._sessionmaker() as session:
                oldest = select(func.min(ProbeResultRow.started_at)).where(DAEMON_RESULTS)
                start = (await session.execute(oldest)).scalar_one()
        if start is None:
            return 0
        written = await self._roll_minutes(start, now)
        # Complete hours whose minutes were just recomputed, and any complete hour never written.
        first = floor_time(start, HOUR_S)
        hour_mark = await self._newest(HOUR_S)
        if hour_mark is None or hour_mark + _HOUR < first:
            unwritten = await self._first_minute_after(hour_mark + _HOUR if hour_mark is not None else None)
            if unwritten is not None:
                first = min(first, floor_time(unwritten, HOUR_S))
        return written + await self._roll_hours(first, now)

    async def rollup_range(self, since: datetime, until: datetime) -> int:
        """Recompute the minute buckets touching [since, until), then the complete hours among them."""
        written = await self._roll_minutes(since, until)
        return written + await self._roll_hours(floor_time(since, HOUR_S), until)

    async def _roll_minutes(self, since: datetime, until: datetime) -> int:
        start = floor_time(since, MINUTE_S)
        written = 0
        while start < until:
            end = min(start + timedelta(seconds=_CHUNK_S), until)
            written += await self._upsert(MINUTE_S, await self._raw_buckets(start, end))
            start = end
        return written

    async def _roll_hours(self, first: datetime, until: datetime) -> int:
        """Write every hour from `first` that is over by `until`, each from its minute buckets, plus its fleet row."""
        written = 0
        hour = first
        while hour + _HOUR <= until:
            buckets = await self._hour_buckets(hour)
            written += await self._upsert(HOUR_S, with_fleet_rows(buckets))
            hour += _HOUR
        return written

    async def _first_minute_after(self, since: datetime | None) -> datetime | None:
        query = select(func.min(ProbeRollupRow.bucket_start)).where(ProbeRollupRow.resolution_s == MINUTE_S)
        if since is not None:
            query = query.where(ProbeRollupRow.bucket_start >= since)
        async with self._sessionmaker() as session:
            value: datetime | None = (await session.execute(query)).scalar_one()
        return value

    async def _raw_buckets(self, since: datetime, until: datetime, *, probe: str | None = None) -> dict[_Key, Bucket]:
        query = select(
            ProbeResultRow.started_at, ProbeResultRow.probe, ProbeResultRow.target, ProbeResultRow.ok,
            ProbeResultRow.error_kind, ProbeResultRow.truncated, ProbeResultRow.failed_checks,
            *_RAW_COLUMNS.values(),
        ).where(DAEMON_RESULTS, ProbeResultRow.started_at >= since, ProbeResultRow.started_at < until)  # fmt: skip
        if probe is not None:
            query = query.where(ProbeResultRow.probe == probe)
        buckets: dict[_Key, Bucket] = {}
        async for part in self._partitions(query):
            await asyncio.to_thread(_add_raw_rows, buckets, part)
        return buckets

    async def _hour_buckets(self, hour: datetime) -> dict[_Key, Bucket]:
        """One bucket per (probe, target), merged from the hour's minutes."""
        condition = and_(ProbeRollupRow.resolution_s == MINUTE_S, *_span(MINUTE_S, hour, hour + _HOUR))
        return await self._merged([condition], None, None, lambda row: (row.probe, row.target, hour))

    async def _upsert(self, resolution_s: int, buckets: dict[_Key, Bucket]) -> int:
        """Write `buckets` in one transaction (statements of `_UPSERT_ROWS` rows)."""
        if not buckets:
            return 0
        values = await asyncio.to_thread(_upsert_values, resolution_s, buckets)
        async with self._sessionmaker() as session, session.begin():
            statement = upsert_statement(session.get_bind().dialect.name)
            for i in range(0, len(values), _UPSERT_ROWS):
                await session.execute(statement, values[i : i + _UPSERT_ROWS])
        return len(values)

    async def window(
        self, *, since: datetime, until: datetime, probe: str | None = None, target: str | None = None
    ) -> Bucket:
        """All results in [since, until) merged into one bucket: settled hours from hour rollups, the rest minutes."""
        hours_end = await self._hours_end()
        first_hour = floor_time(since + timedelta(seconds=HOUR_S - 1), HOUR_S)
        last_hour = min(floor_time(until, HOUR_S), hours_end or first_hour)
        if first_hour < last_hour:
            spans = [(MINUTE_S, since, first_hour), (HOUR_S, first_hour, last_hour), (MINUTE_S, last_hour, until)]
        else:
            spans = [(MINUTE_S, since, until)]
        merged = await self._merged(_conditions(spans), probe, target, lambda row: None)
        return merged.get(None, Bucket())

    async def settled_window(self, *, since: datetime, until: datetime, probe: str | None = None) -> Bucket:
        """Like `window`, but minutes the rollup job may still revise (or has not reached) come from raw rows."""
        mark = await self.watermark()
        split = since if mark is None else floor_time(mark - timedelta(seconds=self.settle_s), MINUTE_S)
        split = min(max(split, since), until)
        total = await self.window(since=since, until=split, probe=probe) if split > since else Bucket()
        if split < until:
            for bucket in (await self._raw_buckets(split, until, probe=probe)).values():
                total.merge(bucket)
        return total

    async def trend(
        self, *, since: datetime, until: datetime, step_s: int, probe: str | None = None, target: str | None = None
    ) -> list[TrendPoint]:
        """Points every `step_s` seconds (a multiple of 60) over [since, until), oldest first; empty steps omitted.

        Steps that are whole hours read hour rollups (and minutes for hours not yet settled); others read minutes.
        """
        if step_s < MINUTE_S or step_s % MINUTE_S:
            raise ValueError(f"step_s must be a positive multiple of {MINUTE_S}, got {step_s}")
        spans = [(MINUTE_S, since, until)]
        if step_s % HOUR_S == 0:
            hours_end = max(min(await self._hours_end() or since, until), since)
            spans = [(HOUR_S, since, hours_end), (MINUTE_S, hours_end, until)]
        conditions = _conditions(spans)
        steps = await self._merged(conditions, probe, target, lambda row: floor_time(row.bucket_start, step_s))
        return [_point(start, bucket) for start, bucket in sorted(steps.items())]

    async def _hours_end(self) -> datetime | None:
        """End of the newest hour bucket: hour rollups are complete before it."""
        newest = await self._newest(HOUR_S)
        return newest + _HOUR if newest is not None else None

    async def _merged(
        self,
        conditions: Sequence[ColumnElement[bool]],
        probe: str | None,
        target: str | None,
        key: Callable[[Row[Any]], _K],
    ) -> dict[_K, Bucket]:
        """Rollup rows matching any of `conditions`, merged into one bucket per `key(row)`."""
        merged: dict[_K, Bucket] = {}
        if not conditions:
            return merged
        filters: list[ColumnElement[bool]] = []
        if probe is not None:
            filters.append(ProbeRollupRow.probe == probe)
        if target is not None:
            filters.append(ProbeRollupRow.target == target)
        if probe is None and target is None:
            # Every probe: hours come from the fleet rows (one per hour), minutes from the probes' rows.
            filters.append(or_(ProbeRollupRow.resolution_s != HOUR_S, ProbeRollupRow.probe == FLEET))
        # Plain column rows, not ORM objects: a 7-day per-minute trend of every probe reads many rows.
        query = select(*_ROLLUP_COLUMNS).where(*filters, or_(*conditions))
        async for part in self._partitions(query):
            await asyncio.to_thread(_merge_rollup_rows, merged, part, key)
        return merged

    async def _partitions(self, query: Executable) -> AsyncIterator[Sequence[Any]]:
        async with self._sessionmaker() as session:
            result = await session.stream(query)
            async for part in result.partitions(_PARTITION_ROWS):
                yield part


def _conditions(spans: Sequence[tuple[int, datetime, datetime]]) -> list[ColumnElement[bool]]:
    return [
        and_(ProbeRollupRow.resolution_s == res, *_span(res, start, end)) for res, start, end in spans if start < end
    ]


def _add_raw_rows(buckets: dict[_Key, Bucket], rows: Sequence[Any]) -> None:
    for started_at, probe, target, ok, error_kind, truncated, failed, *values in rows:
        key = (probe, target, floor_time(started_at, MINUTE_S))
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = Bucket()
        bucket.add(
            ok=ok, error=error_kind is not None, truncated=truncated, failed_checks=failed,
            values=dict(zip(ROLLED_METRICS, values, strict=True)),
        )  # fmt: skip


def _merge_rollup_rows(merged: dict[_K, Bucket], rows: Sequence[Row[Any]], key: Callable[[Row[Any]], _K]) -> None:
    for row in rows:
        k = key(row)
        bucket = merged.get(k)
        if bucket is None:
            bucket = merged[k] = Bucket()
        bucket.merge_row(row)


def with_fleet_rows(hour_buckets: dict[_Key, Bucket]) -> dict[_Key, Bucket]:
    """Per-probe hour buckets plus, per hour, one FLEET bucket merging every probe of that hour."""
    out = dict(hour_buckets)
    for (probe, _target, start), bucket in hour_buckets.items():
        if probe == FLEET:
            raise ValueError("fleet rows are derived, not rolled from minutes")
        fleet = out.get((FLEET, FLEET, start))
        if fleet is None:
            fleet = out[(FLEET, FLEET, start)] = Bucket()
        fleet.merge(bucket)
    return out


def _upsert_values(resolution_s: int, buckets: dict[_Key, Bucket]) -> list[dict[str, Any]]:
    return [
        {"resolution_s": resolution_s, "probe": probe, "target": target, "bucket_start": start, **bucket.to_values()}
        for (probe, target, start), bucket in buckets.items()
    ]


def _span(resolution_s: int, since: datetime, until: datetime) -> list[ColumnElement[bool]]:
    # A bucket counts when it starts inside the span; the bucket holding `since` counts too.
    return [
        ProbeRollupRow.bucket_start >= floor_time(since, resolution_s),
        ProbeRollupRow.bucket_start < until,
    ]


def _point(start: datetime, bucket: Bucket) -> TrendPoint:
    return TrendPoint(
        start=start, results=bucket.results, ok_count=bucket.ok_count, errors=bucket.errors,
        truncated=bucket.truncated,
        metrics={name: MetricSummary.of(bucket.metrics.get(name)) for name in ROLLED_METRICS},
    )  # fmt: skip


def upsert_statement(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (primary key) DO UPDATE for probe_rollups, for executemany."""
    insert = postgresql.insert(ProbeRollupRow) if dialect == "postgresql" else sqlite.insert(ProbeRollupRow)
    keys = ["resolution_s", "probe", "target", "bucket_start"]
    updates = {c.name: insert.excluded[c.name] for c in ProbeRollupRow.__table__.columns if c.name not in keys}
    return insert.on_conflict_do_update(index_elements=keys, set_=updates)


class RollupWindowSource:
    """A `WindowSource` for long windows (regression baselines over days): rollups plus a raw tail.

    Buckets older than the rollup job's settle time are read from rollups; the last few minutes,
    which the job may still revise, are summarised from raw rows. Quantiles carry the histograms'
    2 % relative error; counts, rates, means, min and max are exact (the window's first minute
    is counted whole).
    """

    def __init__(self, rollups: Rollups) -> None:
        self._rollups = rollups

    async def aggregate(
        self, *, metric: str, agg: str, probe: str, since: datetime, until: datetime, check: str | None = None
    ) -> Aggregate:
        bucket = await self._rollups.settled_window(since=since, until=until, probe=probe)
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


def bucket_aggregate(bucket: Bucket, *, metric: str, agg: str, check: str | None = None) -> Aggregate:
    """`agg` of `metric` over a bucket, with the metric definitions of `monitor.alerts.source`."""
    if metric in ROLLED_METRICS:
        hist = bucket.metrics.get(metric)
        if hist is None or not hist.count:
            return Aggregate(None, 0)
        values = {"mean": hist.mean, "max": hist.max, "min": hist.min}
        if agg in values:
            return Aggregate(values[agg], hist.count)
        if agg in ("p50", "p95", "p99"):
            return Aggregate(hist.quantile(float(agg[1:]) / 100.0), hist.count)
        raise ValueError(f"aggregation {agg!r} does not apply to {metric}")
    if agg not in ("rate", "mean"):
        raise ValueError(f"{metric} is a rate: use agg rate")
    if metric == "error_rate":
        hits, count = bucket.errors, bucket.results
    elif metric == "truncation_rate":
        hits, count = bucket.truncated, bucket.answered
    elif metric == "check_failure_rate":
        if not check:
            raise ValueError("check_failure_rate needs the check's name")
        hits, count = bucket.check_failures.get(check, 0), bucket.answered
    else:
        raise ValueError(f"unknown metric {metric!r}")
    return Aggregate(hits / count if count else None, count)
