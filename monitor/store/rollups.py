"""The rollup job: per-minute and per-hour summaries of probe results, written from raw rows.

The job recomputes whole buckets from raw rows and upserts them, so running it twice (or after a
crash half-way) gives the same rows. Hour buckets are merged from minute buckets, which is exact
because every field is a count, a sum or a mergeable histogram (`monitor.store.bucket`). Only the
daemon's results are rolled up: those of one-shot commands (`llm-monitor probe`, `doctor`) are not
part of any trend. Reading them back is `monitor.store.trend.TrendReader`'s job, which `Rollups`
extends, so the job and the reads of what it wrote share one settle time.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from monitor.store.bucket import Bucket, floor_time
from monitor.store.db import upsert_statement
from monitor.store.models import DAEMON_RESULTS, ProbeResultRow
from monitor.store.models_rollups import FLEET, HOUR_S, MINUTE_S, ProbeRollupRow
from monitor.store.server_rollups import ServerRollups
from monitor.store.trend import (
    Segment,
    TrendReader,
    add_raw_rows,
    add_rollup_rows,
    newest_bucket,
    partitions,
    raw_query,
    rollup_query,
)

__all__ = ["Rollups", "upsert_statement", "with_fleet_rows"]

_Key = tuple[str, str, datetime]  # (probe, target, bucket_start)
_HOUR = timedelta(seconds=HOUR_S)
# Raw rows are read in slices of this length, so a backfill never holds more than an hour in memory.
_CHUNK_S = HOUR_S
# Rows per INSERT statement: bounds how long one statement holds the database (and the loop).
_UPSERT_ROWS = 200


class Rollups(TrendReader):
    """Computes rollups from raw results; as a `TrendReader`, answers window and trend queries from them.

    Minute buckets are recomputed from raw rows for the last `settle_s` on every run: a result is
    stored when its request ends, up to a target timeout after the `started_at` that places it in
    a bucket. An hour bucket is written from its minute buckets once the hour is over, and rewritten
    while its minutes may still change; reads take the current hour from minutes. Rows are read in
    partitions and merged in a worker thread, so a big backfill never holds up the event loop (and
    with it the probe schedule).
    """

    async def run(self, now: datetime | None = None) -> int:
        """Bring probe and server-metrics rollups up to `now`; the first run backfills. Returns buckets written."""
        now = now or datetime.now(UTC)
        # The server's own metrics roll up in the same job: one schedule, one leader duty.
        return await self._run_probes(now) + await ServerRollups(self._sessionmaker).run(now)

    async def _run_probes(self, now: datetime) -> int:
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
        # Complete hours whose minutes were just recomputed, and any complete hour never written
        # (a crash between the minute and the hour upserts leaves such a gap; this run closes it).
        first = floor_time(start, HOUR_S)
        async with self._sessionmaker() as session:
            hour_mark = await newest_bucket(session, HOUR_S)
        if hour_mark is None or hour_mark + _HOUR < first:
            unwritten = await self._first_minute_after(hour_mark + _HOUR if hour_mark is not None else None)
            if unwritten is not None:
                first = min(first, floor_time(unwritten, HOUR_S))
        return written + await self._roll_hours(first, now)

    async def rollup_range(self, since: datetime, until: datetime) -> int:
        """Recompute the minute buckets touching [since, until), then the complete hours among them."""
        written = await self._roll_minutes(since, until)
        return written + await self._roll_hours(floor_time(since, HOUR_S), until)

    # The name alert sources used before every window read raw rows for the settle time.
    settled_window = TrendReader.window

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

    async def _raw_buckets(self, since: datetime, until: datetime) -> dict[_Key, Bucket]:
        """One bucket per (probe, target, minute) of the raw results in [since, until): every row, no cap."""

        def key(_res: int, probe: str, target: str, started_at: datetime) -> _Key:
            return (probe, target, floor_time(started_at, MINUTE_S))

        buckets: dict[_Key, Bucket] = {}
        async with self._sessionmaker() as session:
            async for part in partitions(session, raw_query(since, until)):
                await asyncio.to_thread(add_raw_rows, buckets, part, key)
        return buckets

    async def _hour_buckets(self, hour: datetime) -> dict[_Key, Bucket]:
        """One bucket per (probe, target), merged from the hour's minutes."""

        def key(_res: int, probe: str, target: str, _start: datetime) -> _Key:
            return (probe, target, hour)

        buckets: dict[_Key, Bucket] = {}
        async with self._sessionmaker() as session:
            async for part in partitions(session, rollup_query([Segment(MINUTE_S, hour, hour + _HOUR)])):
                await asyncio.to_thread(add_rollup_rows, buckets, part, key)
        return buckets

    async def _upsert(self, resolution_s: int, buckets: dict[_Key, Bucket]) -> int:
        """Write `buckets` in one transaction (statements of `_UPSERT_ROWS` rows)."""
        if not buckets:
            return 0
        values = await asyncio.to_thread(_upsert_values, resolution_s, buckets)
        # One transaction: a reader never sees half of a run's minutes (or an hour without its fleet row).
        async with self._sessionmaker() as session, session.begin():
            statement = upsert_statement(session.get_bind().dialect.name, ProbeRollupRow)
            for i in range(0, len(values), _UPSERT_ROWS):
                await session.execute(statement, values[i : i + _UPSERT_ROWS])
        return len(values)


def with_fleet_rows(hour_buckets: dict[_Key, Bucket]) -> dict[_Key, Bucket]:
    """Per-probe hour buckets plus, per hour, one FLEET bucket merging every probe of that hour.

    Fleet-wide trends then read one row per hour instead of one per probe (a 100-probe week: 168
    rows, not 16,800).
    """
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
