"""Read probe statistics per (probe, target) and time step from the rollups, plus a raw tail.

The rollup job runs every `retention.rollup_interval_s`, so the newest minutes are not rolled up
yet (and a daemon that started a minute ago has no rollups at all). Pages must still show them:
rollup rows are read up to the watermark (the newest minute bucket, which may be partial), and
raw results from the watermark on. Both sides become `monitor.store.rollups.Bucket`s, which
merge exactly, so a step that straddles the watermark is still correct.

The dashboard runs inside the daemon, on its event loop. Decoding and merging thousands of
histograms is CPU work, so it runs in a worker thread on rows fetched as plain tuples (the
histogram JSON is fetched as text and decoded there too), and only the metrics a page shows
are decoded at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Text, and_, func, or_, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.store.models import DAEMON_RESULTS, ProbeResultRow
from monitor.store.models_rollups import FLEET, HOUR_S, MINUTE_S, ProbeRollupRow
from monitor.store.rollups import ROLLED_METRICS, Bucket, Histogram, floor_time

__all__ = ["Key", "OverviewBuckets", "Segment", "StepBuckets", "merged", "plan", "read_buckets", "read_overview"]

logger = logging.getLogger(__name__)

# Raw results are read for at most this long back (when the rollups lag or do not exist yet) ...
RAW_TAIL_MAX_S = 3 * HOUR_S
# ... and at most this many rows, so a page can never pull a whole table into memory.
RAW_TAIL_MAX_ROWS = 50_000

Key = tuple[str, str]  # (probe, target)
StepBuckets = dict[Key, dict[datetime, Bucket]]
# (probe, target, bucket_start, results, ok_count, errors, truncated, metrics JSON text)
_RollupTuple = tuple[str, str, datetime, int, int, int, int, str]
_RAW_VALUES = {
    "latency_ms": ProbeResultRow.latency_ms,
    "ttft_ms": ProbeResultRow.ttft_ms,
    "itl_ms": ProbeResultRow.itl_ms_mean,
    "completion_tokens": ProbeResultRow.completion_tokens,
}
assert tuple(_RAW_VALUES) == ROLLED_METRICS


@dataclass(frozen=True, slots=True)
class Segment:
    """Rollup rows of one resolution whose buckets start in [start, end)."""

    resolution_s: int
    start: datetime
    end: datetime


def _ceil_time(when: datetime, step_s: int) -> datetime:
    floor = floor_time(when, step_s)
    return floor if floor == when else floor + timedelta(seconds=step_s)


def _raw_from(since: datetime, until: datetime, watermark: datetime | None) -> datetime:
    """Where raw results take over from the rollups (a minute boundary)."""
    tail_floor = floor_time(until - timedelta(seconds=RAW_TAIL_MAX_S), MINUTE_S)
    # Rollups that lag more than the tail allows leave a gap; better a gap than a full table scan.
    start = tail_floor if watermark is None else max(min(watermark, until), tail_floor)
    return max(start, floor_time(since, MINUTE_S))


def plan(
    since: datetime, until: datetime, watermark: datetime | None, *, hours: bool
) -> tuple[list[Segment], datetime]:
    """Which rollup rows cover [since, until), and where the raw tail starts.

    With `hours`, whole hours are read from hour rollups and the edges from minute rollups.
    """
    raw_from = _raw_from(since, until, watermark)
    start = floor_time(since, MINUTE_S)
    segments: list[Segment] = []
    first_hour, last_hour = _ceil_time(since, HOUR_S), floor_time(raw_from, HOUR_S)
    if hours and first_hour < last_hour:
        segments += [
            Segment(MINUTE_S, start, first_hour),
            Segment(HOUR_S, first_hour, last_hour),
            Segment(MINUTE_S, last_hour, raw_from),
        ]
    else:
        segments.append(Segment(MINUTE_S, start, raw_from))
    return [s for s in segments if s.start < s.end], raw_from


async def watermark(session: AsyncSession) -> datetime | None:
    query = select(func.max(ProbeRollupRow.bucket_start)).where(ProbeRollupRow.resolution_s == MINUTE_S)
    value: datetime | None = (await session.execute(query)).scalar_one()
    return value


def _filters(probe: str | None, target: str | None) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if probe is not None:
        filters.append(ProbeRollupRow.probe == probe)
    if target is not None:
        filters.append(ProbeRollupRow.target == target)
    return filters


async def _rollup_rows(
    session: AsyncSession, segments: Sequence[Segment], filters: Sequence[ColumnElement[bool]]
) -> list[tuple[int, _RollupTuple]]:
    """(resolution, row) for the rollup rows of `segments`, as plain tuples with the JSON left undecoded."""
    if not segments:
        return []
    r = ProbeRollupRow  # fleet-wide hour rows (probe = FLEET) serve fleet trends; pages list real probes
    spans = [
        and_(r.resolution_s == s.resolution_s, r.bucket_start >= s.start, r.bucket_start < s.end) for s in segments
    ]
    query = select(
        r.resolution_s, r.probe, r.target, r.bucket_start, r.results, r.ok_count, r.errors, r.truncated,
        type_coerce(r.metrics, Text),
    ).where(r.probe != FLEET, *filters, or_(*spans))  # fmt: skip
    return [(row[0], row[1:]) for row in (await session.execute(query)).all()]


async def _raw_rows(
    session: AsyncSession,
    since: datetime,
    until: datetime,
    probe: str | None,
    target: str | None,
    extra: Sequence[Any] = (),
) -> Sequence[Any]:
    """The daemon's raw results in [since, until), newest first: time, names, outcome, rolled values, `extra`."""
    if since >= until:
        return []
    r = ProbeResultRow
    columns = (r.started_at, r.probe, r.target, r.ok, r.error_kind, r.truncated, *_RAW_VALUES.values(), *extra)
    query = select(*columns).where(DAEMON_RESULTS, r.started_at >= since, r.started_at < until)
    if probe is not None:
        query = query.where(r.probe == probe)
    if target is not None:
        query = query.where(r.target == target)
    rows = (await session.execute(query.order_by(r.started_at.desc()).limit(RAW_TAIL_MAX_ROWS))).all()
    if len(rows) == RAW_TAIL_MAX_ROWS:
        logger.warning("dashboard: raw tail since %s cut at %d rows (are rollups running?)", since, len(rows))
    return rows


def _from_tuple(row: _RollupTuple, metrics: Collection[str]) -> Bucket:
    _, _, _, results, ok_count, errors, truncated, text = row
    data = json.loads(text) if isinstance(text, str) else text
    hists = {name: Histogram.from_json(data[name]) for name in metrics if name in data}
    return Bucket(results=results, ok_count=ok_count, errors=errors, truncated=truncated, metrics=hists)


def _raw_bucket(out: dict[datetime, Bucket], step: datetime, row: Any, metrics: Collection[str]) -> None:
    ok, error_kind, truncated = row[3:6]
    values = row[6 : 6 + len(ROLLED_METRICS)]
    bucket = out.get(step)
    if bucket is None:
        bucket = out[step] = Bucket()
    wanted = {name: v for name, v in zip(ROLLED_METRICS, values, strict=True) if name in metrics}
    bucket.add(ok=ok, error=error_kind is not None, truncated=truncated, failed_checks="", values=wanted)


def _adopt(steps: dict[datetime, Bucket], step: datetime, bucket: Bucket) -> None:
    # A fresh bucket from a row can be kept as is; merging it into an empty one would copy it.
    current = steps.get(step)
    if current is None:
        steps[step] = bucket
    else:
        current.merge(bucket)


def merged(steps: dict[datetime, Bucket]) -> Bucket:
    """All steps of one key in one bucket."""
    total = Bucket()
    for bucket in steps.values():
        total.merge(bucket)
    return total


async def read_buckets(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    since: datetime,
    until: datetime,
    step_s: int,
    probe: str | None = None,
    target: str | None = None,
    metrics: Collection[str] = ROLLED_METRICS,
) -> StepBuckets:
    """Buckets per (probe, target) and step start (`floor_time(t, step_s)`) for results in [since, until).

    Steps that are whole hours read hour rollups where they can (whole hours inside the window).
    Only the distributions named in `metrics` are decoded.
    """
    async with sessionmaker() as session:
        mark = await watermark(session)
        segments, raw_from = plan(since, until, mark, hours=step_s % HOUR_S == 0)
        rows = await _rollup_rows(session, segments, _filters(probe, target))
        raw = await _raw_rows(session, max(since, raw_from), until, probe, target)

    def fold() -> StepBuckets:
        out: StepBuckets = {}
        for _, row in rows:
            _adopt(out.setdefault((row[0], row[1]), {}), floor_time(row[2], step_s), _from_tuple(row, metrics))
        for r in raw:
            _raw_bucket(out.setdefault((r[1], r[2]), {}), floor_time(r[0], step_s), r, metrics)
        return out

    return await asyncio.to_thread(fold)


@dataclass(slots=True)
class OverviewBuckets:
    """One probe on the overview: the last hour, the last day, and the last hour minute by minute."""

    hour: Bucket = field(default_factory=Bucket)
    day: Bucket = field(default_factory=Bucket)
    minutes: dict[datetime, Bucket] = field(default_factory=dict)
    # p95 latency of each minute of the last hour, oldest first (None: no answer that minute).
    spark_latency_p95_ms: list[float | None] = field(default_factory=list)
    # The newest raw result, when one is newer than the rollups (its `last_columns` after the rolled values).
    last: Any = None

    def fill_spark(self, first: datetime, steps: int) -> None:
        self.spark_latency_p95_ms = []
        for i in range(steps):
            bucket = self.minutes.get(first + timedelta(seconds=MINUTE_S * i))
            hist = bucket.metrics.get("latency_ms") if bucket is not None else None
            self.spark_latency_p95_ms.append(hist.quantile(0.95) if hist is not None else None)


async def read_overview(
    sessionmaker: async_sessionmaker[AsyncSession],
    now: datetime,
    *,
    metrics: Collection[str],
    spark_steps: int = 60,
    last_columns: Sequence[Any] = (),
) -> dict[Key, OverviewBuckets]:
    """Every probe's last hour (exact to the minute) and last day (from the first whole hour in it).

    The day starts at the first whole hour after `now - 24 h`: reading that partial hour from
    minute rollups would double the rows read for every probe, for at most an hour's difference.
    Each probe's newest raw result comes along (as its `last_columns`), saving a lookup per probe.
    """
    hour_start = floor_time(now - timedelta(hours=1), MINUTE_S)
    day_start = _ceil_time(now - timedelta(hours=24), HOUR_S)
    async with sessionmaker() as session:
        raw_from = _raw_from(day_start, now, await watermark(session))
        cut = max(floor_time(raw_from, HOUR_S), day_start)  # hour rollups cover [day_start, cut)
        segments = [Segment(MINUTE_S, min(hour_start, cut), raw_from), Segment(HOUR_S, day_start, cut)]
        rows = await _rollup_rows(session, [s for s in segments if s.start < s.end], [])
        raw = await _raw_rows(session, raw_from, now, None, None, last_columns)

    def fold() -> dict[Key, OverviewBuckets]:
        out: dict[Key, OverviewBuckets] = {}
        for resolution, row in rows:
            probe = out.setdefault((row[0], row[1]), OverviewBuckets())
            bucket = _from_tuple(row, metrics)
            start = row[2]
            if resolution == HOUR_S or start >= cut:
                probe.day.merge(bucket)
            if resolution == MINUTE_S and start >= hour_start:
                probe.hour.merge(bucket)
                _adopt(probe.minutes, start, bucket)
        for r in raw:
            probe = out.setdefault((r[1], r[2]), OverviewBuckets())
            if probe.last is None:  # newest first
                probe.last = r[6 + len(ROLLED_METRICS) :]
            minute: dict[datetime, Bucket] = {}
            _raw_bucket(minute, floor_time(r[0], MINUTE_S), r, metrics)
            for start, bucket in minute.items():
                probe.day.merge(bucket)
                if start >= hour_start:
                    probe.hour.merge(bucket)
                    _adopt(probe.minutes, start, bucket)
        spark_first = floor_time(now, MINUTE_S) - timedelta(seconds=MINUTE_S * (spark_steps - 1))
        for probe in out.values():
            probe.fill_spark(spark_first, spark_steps)
        return out

    return await asyncio.to_thread(fold)
