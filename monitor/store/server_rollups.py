"""Per-minute and per-hour rollups of the daemon's server-metrics scrapes, and the one reader of them.

`Rollups.run` (the daemon's rollup job) calls `ServerRollups.run`, which recomputes whole minute
buckets from raw scrapes and merges complete hours from their minutes, upserting both: a rerun
gives the same rows. Each field of `monitor.server_metrics.FIELDS` is a `Histogram` of its
per-scrape values (exact count, sum, min and max; percentiles to the histogram's accuracy). A field
no scrape exposed has no histogram, so it reads back as None, never 0.

`ServerRollups.read` plans a span with the probe trend's planner (`monitor.store.trend.plan_table`):
rollup rows up to the settle time before the watermark, raw scrapes after it. Until the first
rollup run, every raw scrape is read (capped at `RAW_TAIL_MAX_ROWS`, newest first).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, Text, and_, false, func, or_, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.server_metrics import FIELDS
from monitor.store.bucket import Histogram, floor_time
from monitor.store.db import upsert_statement
from monitor.store.models_rollups import HOUR_S, MINUTE_S
from monitor.store.models_server_metrics import ServerMetricRollupRow, ServerMetricRow
from monitor.store.trend import DEFAULT_SETTLE_S, RAW_TAIL_MAX_ROWS, Segment, newest_bucket, partitions, plan_table

__all__ = ["ServerBucket", "ServerRollups"]

_Key = tuple[str, datetime]  # (target, bucket_start)
_HOUR = timedelta(seconds=HOUR_S)
_CHUNK = timedelta(seconds=HOUR_S)
_UPSERT_ROWS = 200
_DAEMON = ServerMetricRow.load_run_id.is_(None)


@dataclass(slots=True)
class ServerBucket:
    """Scrapes of one span: how many, how many failed, and per exposed field a histogram of its values."""

    scrapes: int = 0
    errors: int = 0
    fields: dict[str, Histogram] = field(default_factory=dict)

    @property
    def answered(self) -> int:
        """Scrapes that gave values (no `error`)."""
        return self.scrapes - self.errors

    def add(self, error: str | None, values: Sequence[float | None]) -> None:
        self.scrapes += 1
        if error is not None:
            self.errors += 1
            return
        for name, value in zip(FIELDS, values, strict=True):
            if value is not None:
                self._hist(name).add(float(value))

    def merge_stored(self, scrapes: int, errors: int, metrics: Mapping[str, Any]) -> None:
        self.scrapes += scrapes
        self.errors += errors
        for name, data in metrics.items():
            if name in FIELDS:
                self._hist(name).merge_json(data)

    def summary(self, name: str) -> Histogram | None:
        """The field's histogram, None when no scrape of the span exposed it."""
        hist = self.fields.get(name)
        return hist if hist is not None and hist.count else None

    def to_values(self) -> dict[str, Any]:
        metrics = {name: hist.to_json() for name, hist in self.fields.items() if hist.count}
        return {"scrapes": self.scrapes, "errors": self.errors, "metrics": metrics}

    def _hist(self, name: str) -> Histogram:
        hist = self.fields.get(name)
        if hist is None:
            hist = self.fields[name] = Histogram()
        return hist


class ServerRollups:
    """Writes and reads `server_metric_rollups` through a session factory it does not own.

    `settle_s` is how far before the watermark each run recomputes (and reads switch to raw rows):
    a scrape is stored within its timeout of `scraped_at`, far less than the default.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, settle_s: float = DEFAULT_SETTLE_S) -> None:
        self._sessionmaker = sessionmaker
        self.settle_s = settle_s

    async def watermark(self) -> datetime | None:
        """Start of the newest minute bucket (None before the first run over any scrape)."""
        async with self._sessionmaker() as session:
            return await newest_bucket(session, MINUTE_S, ServerMetricRollupRow)

    async def run(self, now: datetime | None = None) -> int:
        """Bring the rollups up to `now`; the first run backfills from the oldest scrape. Returns buckets written."""
        now = now or datetime.now(UTC)
        mark = await self.watermark()
        async with self._sessionmaker() as session:
            if mark is not None:
                start: datetime | None = mark - timedelta(seconds=self.settle_s)
            else:
                start = (await session.execute(select(func.min(ServerMetricRow.scraped_at)).where(_DAEMON))).scalar()
            hour_mark = await newest_bucket(session, HOUR_S, ServerMetricRollupRow)
            if hour_mark is None:
                # No hour written yet (a crash after the first minutes): hours start at the first minute.
                first_minute = select(func.min(ServerMetricRollupRow.bucket_start))
                hour_mark = (await session.execute(first_minute)).scalar()
                if hour_mark is not None:
                    hour_mark = floor_time(hour_mark, HOUR_S) - _HOUR
        if start is None:
            return 0
        written = 0
        minute = floor_time(start, MINUTE_S)
        while minute < now:
            end = min(minute + _CHUNK, now)
            written += await self._upsert(MINUTE_S, await self._buckets(_raw_query(minute, end), MINUTE_S))
            minute = end
        # Hours whose minutes were just recomputed, and (after a crash between the two) the first unwritten one.
        hour = floor_time(start, HOUR_S)
        if hour_mark is not None and hour_mark + _HOUR < hour:
            hour = hour_mark + _HOUR
        while hour + _HOUR <= now:
            query = _rollup_query([Segment(MINUTE_S, hour, hour + _HOUR)])
            written += await self._upsert(HOUR_S, await self._buckets(query, HOUR_S))
            hour += _HOUR
        return written

    async def read(
        self, target: str, *, since: datetime, until: datetime, step_s: int | None
    ) -> dict[datetime | None, ServerBucket]:
        """The daemon's scrapes of `target` in [since, until) per step (`floor_time`), or in one bucket (None).

        `step_s` is a positive multiple of 60; steps of whole hours (and windows) read hour rollups where they can.
        """
        if step_s is not None and (step_s < MINUTE_S or step_s % MINUTE_S):
            raise ValueError(f"step_s must be a positive multiple of {MINUTE_S}, got {step_s}")
        out: dict[datetime | None, ServerBucket] = {}

        def fold(rows: Sequence[Any], raw: bool) -> None:
            for row in rows:
                start = row[0] if raw else row[1]
                bucket = out.setdefault(None if step_s is None else floor_time(start, step_s), ServerBucket())
                if raw:
                    bucket.add(row[1], row[2:-1])
                else:
                    bucket.merge_stored(row[3], row[4], _decoded(row[5]))

        async with self._sessionmaker() as session:
            segments: list[Segment] = []
            raw_from = since
            if await newest_bucket(session, MINUTE_S, ServerMetricRollupRow) is not None:
                hours = step_s is None or step_s % HOUR_S == 0
                segments, raw_from = await plan_table(
                    session, ServerMetricRollupRow, since, until, hours=hours, settle_s=self.settle_s
                )
            if segments:
                async for part in partitions(session, _rollup_query(segments, target=target)):
                    await asyncio.to_thread(fold, part, False)
            tail = _raw_query(max(since, raw_from), until, target=target)
            tail = tail.order_by(ServerMetricRow.scraped_at.desc()).limit(RAW_TAIL_MAX_ROWS)
            async for part in partitions(session, tail):
                await asyncio.to_thread(fold, part, True)
        return out

    async def _buckets(self, query: Select[Any], resolution_s: int) -> dict[_Key, ServerBucket]:
        """Fold raw scrapes (resolution MINUTE_S) or minute rollups (HOUR_S) into buckets of `resolution_s`."""
        buckets: dict[_Key, ServerBucket] = {}

        def fold(rows: Sequence[Any]) -> None:
            for row in rows:
                if resolution_s == MINUTE_S:
                    key = (row[-1], floor_time(row[0], MINUTE_S))
                    buckets.setdefault(key, ServerBucket()).add(row[1], row[2:-1])
                else:
                    key = (row[2], floor_time(row[1], HOUR_S))
                    buckets.setdefault(key, ServerBucket()).merge_stored(row[3], row[4], _decoded(row[5]))

        async with self._sessionmaker() as session:
            async for part in partitions(session, query):
                await asyncio.to_thread(fold, part)
        return buckets

    async def _upsert(self, resolution_s: int, buckets: dict[_Key, ServerBucket]) -> int:
        if not buckets:
            return 0
        values = [
            {"resolution_s": resolution_s, "target": target, "bucket_start": start, **bucket.to_values()}
            for (target, start), bucket in buckets.items()
        ]
        async with self._sessionmaker() as session, session.begin():
            statement = upsert_statement(session.get_bind().dialect.name, ServerMetricRollupRow)
            for i in range(0, len(values), _UPSERT_ROWS):
                await session.execute(statement, values[i : i + _UPSERT_ROWS])
        return len(values)


def _raw_query(since: datetime, until: datetime, *, target: str | None = None) -> Select[Any]:
    """The daemon's scrapes in [since, until): scraped_at, error, `FIELDS`, target."""
    r = ServerMetricRow
    query = select(r.scraped_at, r.error, *(getattr(r, name) for name in FIELDS), r.target).where(
        _DAEMON, r.scraped_at >= since, r.scraped_at < until
    )
    return query if target is None else query.where(r.target == target)


def _rollup_query(segments: Sequence[Segment], *, target: str | None = None) -> Select[Any]:
    """Rollup rows of `segments`: resolution_s, bucket_start, target, scrapes, errors, metrics (JSON as text)."""
    r = ServerMetricRollupRow
    spans = [
        and_(r.resolution_s == s.resolution_s, r.bucket_start >= s.start, r.bucket_start < s.end) for s in segments
    ]
    columns: list[Any] = [r.resolution_s, r.bucket_start, r.target, r.scrapes, r.errors, type_coerce(r.metrics, Text)]
    query = select(*columns).where(or_(*spans) if spans else false())
    return query if target is None else query.where(r.target == target)


def _decoded(value: Any) -> Any:
    # JSON fetched as text (type_coerce): decoded in the worker thread, not on the event loop.
    return json.loads(value) if isinstance(value, str) else value
