"""The one reader of probe statistics over time: rollups up to the watermark, raw results after it.

The API's `/api/v1/trend`, the dashboard's overview and probe pages and the alert window sources
all read through `TrendReader`, so one span of results gives one number wherever it is shown.

`plan` decides which rows cover a span. The rollup job runs every `retention.rollup_interval_s`,
so the newest minutes are not rolled up yet, and the minutes just before the watermark (the newest
minute bucket) may still be revised by its next run: a result is stored when its request ends, up
to a target timeout after the `started_at` that places it. So rollup rows are read up to
`settle_s` before the watermark, raw results from there on; whole hours of a span come from hour
rollups when the step allows it. Both sides become `Bucket`s, which merge exactly, so a step that
straddles the split is still right.

The reader runs on the daemon's event loop. Decoding and merging thousands of histograms is CPU
work, so rows are fetched as plain tuples in partitions (histogram JSON as text) and folded in a
worker thread, one partition at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, Text, and_, false, func, or_, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.metric_catalog import DISTRIBUTIONS, METRICS, RATE_COUNTS, metric
from monitor.store.bucket import RESULT_COLUMNS, Bucket, MetricSummary, floor_time
from monitor.store.models import DAEMON_RESULTS, ProbeResultRow
from monitor.store.models_rollups import FLEET, HOUR_S, MINUTE_S, ProbeRollupRow

__all__ = [
    "DEFAULT_SETTLE_S",
    "RAW",
    "RAW_TAIL_MAX_ROWS",
    "RAW_TAIL_MAX_S",
    "Key",
    "Recent",
    "Segment",
    "TrendReader",
    "TrendStep",
    "add_raw_rows",
    "add_rollup_rows",
    "ceil_time",
    "newest_bucket",
    "partitions",
    "plan",
    "plan_table",
    "raw_query",
    "rollup_query",
]

logger = logging.getLogger(__name__)

# Raw results are read for at most this long back (when the rollups lag or do not exist yet) ...
RAW_TAIL_MAX_S = 3 * HOUR_S
# ... and at most this many rows, so a read can never pull a whole table into memory.
RAW_TAIL_MAX_ROWS = 50_000
# How long after the watermark the rollup job may still revise a minute (the job's default too).
DEFAULT_SETTLE_S = 180.0
# Rows per fetch while streaming: each partition is folded in one worker-thread call.
_PARTITION_ROWS = 500
# The resolution key functions get for raw rows.
RAW = 0

Key = tuple[str, str]  # (probe, target)
_K = TypeVar("_K")
# (resolution_s or RAW, probe, target, bucket_start or started_at) -> where the row's bucket merges
KeyFn = Callable[[int, str, str, datetime], _K]
_HOUR = timedelta(seconds=HOUR_S)


@dataclass(frozen=True, slots=True)
class Segment:
    """Rollup rows of one resolution whose buckets start in [start, end)."""

    resolution_s: int
    start: datetime
    end: datetime

    def covers(self, resolution_s: int, start: datetime) -> bool:
        return resolution_s == self.resolution_s and self.start <= start < self.end


def ceil_time(when: datetime, step_s: int) -> datetime:
    floor = floor_time(when, step_s)
    return floor if floor == when else floor + timedelta(seconds=step_s)


def plan(
    since: datetime,
    until: datetime,
    watermark: datetime | None,
    *,
    hours: bool,
    settle_s: float = 0.0,
    hours_end: datetime | None = None,
) -> tuple[list[Segment], datetime]:
    """Which rollup rows cover [since, until), and where the raw tail starts (a minute boundary).

    `watermark` is the newest minute bucket (None: no rollups yet). With `hours`, whole hours are
    read from hour rollups, up to `hours_end` (the end of the newest hour row, when known), and the
    edges from minute rollups. The minute holding `since` counts whole when it comes from rollups.
    """
    tail_floor = floor_time(until - timedelta(seconds=RAW_TAIL_MAX_S), MINUTE_S)
    # Rollups that lag more than the tail allows leave a gap; better a gap than a full table scan.
    raw_from = tail_floor
    if watermark is not None:
        settled = floor_time(watermark - timedelta(seconds=settle_s), MINUTE_S)
        raw_from = max(min(settled, floor_time(until, MINUTE_S)), tail_floor)
    start = floor_time(since, MINUTE_S)
    raw_from = max(raw_from, start)
    first_hour, last_hour = ceil_time(since, HOUR_S), floor_time(raw_from, HOUR_S)
    if hours_end is not None:
        last_hour = min(last_hour, hours_end)
    if hours and first_hour < last_hour:
        segments = [
            Segment(MINUTE_S, start, first_hour),
            Segment(HOUR_S, first_hour, last_hour),
            Segment(MINUTE_S, last_hour, raw_from),
        ]
    else:
        segments = [Segment(MINUTE_S, start, raw_from)]
    return [s for s in segments if s.start < s.end], raw_from


@dataclass(frozen=True, slots=True)
class TrendStep:
    """One step of a trend, from `start` for the trend's step: counts, rates and distribution summaries.

    The one JSON shape of a trend step (the API's `/api/v1/trend` and the probe page's `steps`).
    """

    start: datetime
    results: int
    ok_count: int
    counts: dict[str, int]  # the catalogue's count columns: errors, truncated
    rates: dict[str, float | None]  # every rate but the per-check one: error_rate, truncation_rate
    check_failure_rates: dict[str, float | None]  # check name -> rate
    metrics: dict[str, MetricSummary]  # every distribution, empty ones too

    @classmethod
    def of(cls, start: datetime, bucket: Bucket) -> TrendStep:
        return cls(
            start=start,
            results=bucket.results,
            ok_count=bucket.ok_count,
            counts={column: bucket.counts[column] for column in RATE_COUNTS},
            rates={m.name: bucket.rate(m.name) for m in METRICS if m.kind == "rate" and not m.per_check},
            check_failure_rates={c: bucket.rate("check_failure_rate", c) for c in sorted(bucket.check_failures)},
            metrics={name: bucket.summary(name) for name in DISTRIBUTIONS},
        )

    @property
    def errors(self) -> int:
        return self.counts[metric("error_rate").count]

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(), "results": self.results, "ok": self.ok_count, **self.counts,
            **self.rates, "check_failure_rate": self.check_failure_rates,
            "metrics": {name: s.to_json() for name, s in self.metrics.items()},
        }  # fmt: skip


@dataclass(slots=True)
class Recent:
    """One probe's recent picture: the last hour, the last day, and the last hour minute by minute."""

    hour: Bucket = field(default_factory=Bucket)
    day: Bucket = field(default_factory=Bucket)
    minutes: dict[datetime, Bucket] = field(default_factory=dict)
    # The newest raw result's `extra` columns, when one is newer than the rollups.
    last: Sequence[Any] | None = None


class TrendReader:
    """Reads probe statistics from rollups and raw results over a session factory it does not own.

    `settle_s` is how long before the watermark raw rows take over: the rollup job's settle time,
    so that no minute it may still revise is read from its rollup row.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, settle_s: float = DEFAULT_SETTLE_S) -> None:
        self._sessionmaker = sessionmaker
        self.settle_s = settle_s

    async def watermark(self) -> datetime | None:
        """Start of the newest minute bucket (None before the rollup job's first run)."""
        async with self._sessionmaker() as session:
            return await newest_bucket(session, MINUTE_S)

    async def steps(
        self,
        *,
        since: datetime,
        until: datetime,
        step_s: int,
        probe: str | None = None,
        target: str | None = None,
        metrics: Collection[str] = DISTRIBUTIONS,
    ) -> dict[datetime, Bucket]:
        """Results in [since, until) of the matching probes merged per step (`floor_time(t, step_s)`), oldest first.

        `step_s` is a positive multiple of 60; steps that are whole hours read hour rollups where they can.
        Empty steps are left out; only the distributions in `metrics` are decoded.
        """
        if step_s < MINUTE_S or step_s % MINUTE_S:
            raise ValueError(f"step_s must be a positive multiple of {MINUTE_S}, got {step_s}")

        def key(_res: int, _probe: str, _target: str, start: datetime) -> datetime:
            return floor_time(start, step_s)

        merged = await self._read(
            since, until, hours=step_s % HOUR_S == 0, probe=probe, target=target, key=key, metrics=metrics
        )
        return dict(sorted(merged.items()))

    async def trend(
        self, *, since: datetime, until: datetime, step_s: int, probe: str | None = None, target: str | None = None
    ) -> list[TrendStep]:
        """`steps` as `TrendStep`s: what `/api/v1/trend` and the probe page's charts show."""
        steps = await self.steps(since=since, until=until, step_s=step_s, probe=probe, target=target)
        return [TrendStep.of(start, bucket) for start, bucket in steps.items()]

    async def window(
        self,
        *,
        since: datetime,
        until: datetime,
        probe: str | None = None,
        target: str | None = None,
        metrics: Collection[str] = DISTRIBUTIONS,
    ) -> Bucket:
        """All results in [since, until) of the matching probes in one bucket."""
        merged = await self._read(
            since, until, hours=True, probe=probe, target=target, key=lambda *_: None, metrics=metrics
        )
        return merged.get(None, Bucket())

    async def recent(
        self, now: datetime, *, metrics: Collection[str] = DISTRIBUTIONS, extra: Sequence[Any] = ()
    ) -> dict[Key, Recent]:
        """Every probe's last hour (exact to the minute) and last day (from the first whole hour in it).

        The day starts at the first whole hour after `now - 24 h`: reading that partial hour from
        minute rollups would double the rows read for every probe, for at most an hour's difference.
        Each probe's newest raw result comes along (its `extra` columns), saving a lookup per probe.
        """
        hour_start = floor_time(now - _HOUR, MINUTE_S)
        day_start = ceil_time(now - timedelta(days=1), HOUR_S)
        flat: dict[tuple[int, str, str, datetime], Bucket] = {}
        last: dict[Key, Sequence[Any]] = {}

        def key(res: int, probe: str, target: str, start: datetime) -> tuple[int, str, str, datetime]:
            # Raw rows become minute buckets; they start where rollup rows stop, so no key holds both.
            return (MINUTE_S, probe, target, floor_time(start, MINUTE_S)) if res == RAW else (res, probe, target, start)

        def fold_raw(rows: Sequence[Any]) -> None:
            for row in rows:  # newest first
                last.setdefault((row[1], row[2]), row[4 + len(RESULT_COLUMNS) :])
            add_raw_rows(flat, rows, key)

        async with self._sessionmaker() as session:
            day, raw_from = await self._plan(session, day_start, now, hours=True)
            # The last hour minute by minute, also where the day reads it from hour rows.
            segments = [*day, Segment(MINUTE_S, min(hour_start, raw_from), raw_from)]
            async for part in partitions(session, rollup_query([s for s in segments if s.start < s.end])):
                await asyncio.to_thread(add_rollup_rows, flat, part, key, metrics)
            async for part in partitions(session, self._tail(raw_from, now, None, None, extra)):
                await asyncio.to_thread(fold_raw, part)

        out: dict[Key, Recent] = {}
        for (res, probe, target, start), bucket in flat.items():
            recent = out.setdefault((probe, target), Recent())
            if start >= raw_from or any(s.covers(res, start) for s in day):
                recent.day.merge(bucket)
            if res == MINUTE_S and start >= hour_start:
                recent.hour.merge(bucket)
                recent.minutes[start] = bucket
        for k, columns in last.items():
            out[k].last = columns
        return out

    async def raw_window(self, *, probe: str, since: datetime, until: datetime) -> Bucket:
        """The results of `probe` in [since, until) in one bucket, from raw rows only (no row cap)."""
        buckets: dict[None, Bucket] = {}
        async with self._sessionmaker() as session:
            async for part in partitions(session, raw_query(since, until, probe=probe)):
                await asyncio.to_thread(add_raw_rows, buckets, part, lambda *_: None)
        return buckets.get(None, Bucket())

    async def raw_values(self, name: str, *, probe: str, since: datetime, until: datetime) -> list[float]:
        """Every value of the distribution `name` of `probe` in [since, until), from raw rows (exact quantiles)."""
        m = metric(name)
        if m.kind != "distribution":
            raise ValueError(f"{name} is a rate, not a distribution")
        column = getattr(ProbeResultRow, m.column)
        query = select(column).where(
            DAEMON_RESULTS, ProbeResultRow.probe == probe, ProbeResultRow.started_at >= since,
            ProbeResultRow.started_at < until, ProbeResultRow.error_kind.is_(None), column.is_not(None),
        )  # fmt: skip
        async with self._sessionmaker() as session:
            return [float(v) for v in (await session.scalars(query)).all()]

    async def _plan(
        self, session: AsyncSession, since: datetime, until: datetime, *, hours: bool
    ) -> tuple[list[Segment], datetime]:
        return await plan_table(session, ProbeRollupRow, since, until, hours=hours, settle_s=self.settle_s)

    async def _read(
        self,
        since: datetime,
        until: datetime,
        *,
        hours: bool,
        probe: str | None,
        target: str | None,
        key: KeyFn[_K],
        metrics: Collection[str],
    ) -> dict[_K, Bucket]:
        out: dict[_K, Bucket] = {}
        # Every probe at once: hours come from the fleet rows (one per hour), not one row per probe.
        fleet = probe is None and target is None
        async with self._sessionmaker() as session:
            segments, raw_from = await self._plan(session, since, until, hours=hours)
            if segments:
                query = rollup_query(segments, probe=probe, target=target, fleet=fleet)
                async for part in partitions(session, query):
                    await asyncio.to_thread(add_rollup_rows, out, part, key, metrics)
            async for part in partitions(session, self._tail(max(since, raw_from), until, probe, target)):
                await asyncio.to_thread(add_raw_rows, out, part, key)
        return out

    def _tail(
        self, since: datetime, until: datetime, probe: str | None, target: str | None, extra: Sequence[Any] = ()
    ) -> Select[Any]:
        query = raw_query(since, until, probe=probe, target=target, extra=extra)
        return query.order_by(ProbeResultRow.started_at.desc()).limit(RAW_TAIL_MAX_ROWS)


async def plan_table(
    session: AsyncSession, table: Any, since: datetime, until: datetime, *, hours: bool, settle_s: float
) -> tuple[list[Segment], datetime]:
    """`plan` for the rollup table `table` (probe or server rollups), its watermark and hours read from it."""
    mark = await newest_bucket(session, MINUTE_S, table)
    hours_end = None
    if hours:
        newest_hour = await newest_bucket(session, HOUR_S, table)
        # No hour rows yet: none may be read (the planner then takes minutes).
        hours_end = newest_hour + _HOUR if newest_hour is not None else since
    return plan(since, until, mark, hours=hours, settle_s=settle_s, hours_end=hours_end)


async def newest_bucket(session: AsyncSession, resolution_s: int, table: Any = ProbeRollupRow) -> datetime | None:
    """Start of the newest bucket of `resolution_s` in the rollup table `table` (an index lookup)."""
    query = select(func.max(table.bucket_start)).where(table.resolution_s == resolution_s)
    value: datetime | None = (await session.execute(query)).scalar_one()
    return value


def raw_query(
    since: datetime, until: datetime, *, probe: str | None = None, target: str | None = None, extra: Sequence[Any] = ()
) -> Select[Any]:
    """The daemon's raw results in [since, until): time, probe, target, ok, `RESULT_COLUMNS`, then `extra`."""
    r = ProbeResultRow
    values = [getattr(r, name) for name in RESULT_COLUMNS]
    query = select(r.started_at, r.probe, r.target, r.ok, *values, *extra).where(
        DAEMON_RESULTS, r.started_at >= since, r.started_at < until
    )
    if probe is not None:
        query = query.where(r.probe == probe)
    if target is not None:
        query = query.where(r.target == target)
    return query


def rollup_query(
    segments: Sequence[Segment], *, probe: str | None = None, target: str | None = None, fleet: bool = False
) -> Select[Any]:
    """The rollup rows of `segments` as plain tuples, their JSON columns left as undecoded text.

    With `fleet`, hour segments read only the FLEET rows (every probe of that hour merged); without,
    FLEET rows are left out, so they never show up as a probe of their own.
    """
    r = ProbeRollupRow
    spans = [
        and_(r.resolution_s == s.resolution_s, r.bucket_start >= s.start, r.bucket_start < s.end) for s in segments
    ]
    filters: list[ColumnElement[bool]] = [or_(*spans) if spans else false()]
    filters.append(or_(r.resolution_s != HOUR_S, r.probe == FLEET) if fleet else r.probe != FLEET)
    if probe is not None:
        filters.append(r.probe == probe)
    if target is not None:
        filters.append(r.target == target)
    counts = [getattr(r, column) for column in RATE_COUNTS]
    return select(
        r.resolution_s, r.probe, r.target, r.bucket_start, r.results, r.ok_count, *counts,
        type_coerce(r.check_failures, Text), type_coerce(r.metrics, Text),
    ).where(*filters)  # fmt: skip


async def partitions(session: AsyncSession, query: Select[Any]) -> AsyncIterator[Sequence[Any]]:
    """The rows of `query`, streamed in partitions (so a backfill or a long trend is never all in memory)."""
    result = await session.stream(query)
    async for part in result.partitions(_PARTITION_ROWS):
        yield part


def add_raw_rows(into: dict[_K, Bucket], rows: Sequence[Any], key: KeyFn[_K]) -> None:
    """Add rows of `raw_query` to the bucket of `key(RAW, probe, target, started_at)` each."""
    end = 4 + len(RESULT_COLUMNS)
    for row in rows:
        k = key(RAW, row[1], row[2], row[0])
        bucket = into.get(k)
        if bucket is None:
            bucket = into[k] = Bucket()
        bucket.add(row[3], dict(zip(RESULT_COLUMNS, row[4:end], strict=True)))


def add_rollup_rows(
    into: dict[_K, Bucket], rows: Sequence[Any], key: KeyFn[_K], metrics: Collection[str] | None = None
) -> None:
    """Merge rows of `rollup_query` into the bucket of `key(resolution_s, probe, target, bucket_start)` each."""
    n = len(RATE_COUNTS)
    for resolution_s, probe, target, start, results, ok_count, *rest in rows:
        k = key(resolution_s, probe, target, start)
        bucket = into.get(k)
        if bucket is None:
            bucket = into[k] = Bucket()
        bucket.merge_stored(results, ok_count, rest[:n], _decoded(rest[n]), _decoded(rest[n + 1]), only=metrics)


def _decoded(value: Any) -> Any:
    # JSON fetched as text (type_coerce): decoded here, in the worker thread, not on the event loop.
    return json.loads(value) if isinstance(value, str) else value
