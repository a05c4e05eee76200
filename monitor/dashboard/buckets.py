"""Read probe statistics per (probe, target) and time step from the rollups, plus a raw tail.

The rollup job runs every `retention.rollup_interval_s`, so the newest minutes are not rolled up
yet (and a daemon that started a minute ago has no rollups at all). Pages must still show them:
rollup rows are read up to the watermark (the newest minute bucket, which may be partial), and
raw results from the watermark on. Both sides are `monitor.store.rollups.Bucket`s, which merge
exactly, so a step that straddles the watermark is still correct.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.store.models import ProbeResultRow
from monitor.store.models_rollups import HOUR_S, MINUTE_S, ProbeRollupRow
from monitor.store.rollups import ROLLED_METRICS, Bucket, floor_time

__all__ = ["Key", "Segment", "StepBuckets", "plan", "read_buckets"]

logger = logging.getLogger(__name__)

# Raw results are read for at most this long back (when the rollups lag or do not exist yet) ...
RAW_TAIL_MAX_S = 3 * HOUR_S
# ... and at most this many rows, so a page can never pull a whole table into memory.
RAW_TAIL_MAX_ROWS = 50_000

Key = tuple[str, str]  # (probe, target)
StepBuckets = dict[Key, dict[datetime, Bucket]]


@dataclass(frozen=True, slots=True)
class Segment:
    """Rollup rows of one resolution whose buckets start in [start, end)."""

    resolution_s: int
    start: datetime
    end: datetime


def _ceil_time(when: datetime, step_s: int) -> datetime:
    floor = floor_time(when, step_s)
    return floor if floor == when else floor + timedelta(seconds=step_s)


def plan(
    since: datetime, until: datetime, watermark: datetime | None, *, hours: bool
) -> tuple[list[Segment], datetime]:
    """Which rollup rows cover [since, until), and where the raw tail starts.

    With `hours`, whole hours are read from hour rollups and the edges from minute rollups.
    """
    tail_floor = floor_time(until - timedelta(seconds=RAW_TAIL_MAX_S), MINUTE_S)
    if watermark is None:
        raw_from = tail_floor
    else:
        # Rollups that lag more than the tail allows leave a gap; better a gap than a full table scan.
        raw_from = max(min(watermark, until), tail_floor)
    raw_from = max(raw_from, floor_time(since, MINUTE_S))
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


async def read_buckets(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    since: datetime,
    until: datetime,
    step_s: int,
    probe: str | None = None,
    target: str | None = None,
) -> StepBuckets:
    """Buckets per (probe, target) and step start (`floor_time(t, step_s)`) for results in [since, until).

    Steps that are whole hours read hour rollups where they can. Hour rows are only used for
    steps that hold whole hours, so callers wanting one exact window should pass a `step_s`
    that divides the window's edges (the overview uses minutes for 1 h and hours for 24 h).
    """
    out: StepBuckets = {}
    async with sessionmaker() as session:
        mark = await watermark(session)
        segments, raw_from = plan(since, until, mark, hours=step_s % HOUR_S == 0)
        filters: list[ColumnElement[bool]] = []
        if probe is not None:
            filters.append(ProbeRollupRow.probe == probe)
        if target is not None:
            filters.append(ProbeRollupRow.target == target)
        if segments:
            spans = [
                and_(
                    ProbeRollupRow.resolution_s == s.resolution_s,
                    ProbeRollupRow.bucket_start >= s.start,
                    ProbeRollupRow.bucket_start < s.end,
                )
                for s in segments
            ]
            rows = (await session.scalars(select(ProbeRollupRow).where(*filters, or_(*spans)))).all()
            for row in rows:
                step = floor_time(row.bucket_start, step_s)
                _bucket(out, (row.probe, row.target), step).merge(Bucket.from_row(row))
        await _raw_tail(
            session, out, since=max(since, raw_from), until=until, step_s=step_s, probe=probe, target=target
        )
    return out


async def _raw_tail(
    session: AsyncSession,
    out: StepBuckets,
    *,
    since: datetime,
    until: datetime,
    step_s: int,
    probe: str | None,
    target: str | None,
) -> None:
    if since >= until:
        return
    r = ProbeResultRow
    query = select(
        r.started_at,
        r.probe,
        r.target,
        r.ok,
        r.error_kind,
        r.truncated,
        r.failed_checks,
        r.latency_ms,
        r.ttft_ms,
        r.itl_ms_mean,
        r.completion_tokens,
    ).where(r.started_at >= since, r.started_at < until)
    if probe is not None:
        query = query.where(r.probe == probe)
    if target is not None:
        query = query.where(r.target == target)
    rows = (await session.execute(query.order_by(r.started_at.desc()).limit(RAW_TAIL_MAX_ROWS))).all()
    if len(rows) == RAW_TAIL_MAX_ROWS:
        logger.warning("dashboard: raw tail since %s cut at %d rows (are rollups running?)", since, len(rows))
    for started_at, p, t, ok, error_kind, truncated, failed, *values in rows:
        _bucket(out, (p, t), floor_time(started_at, step_s)).add(
            ok=ok,
            error=error_kind is not None,
            truncated=truncated,
            failed_checks=failed,
            values=dict(zip(ROLLED_METRICS, values, strict=True)),
        )


def _bucket(out: StepBuckets, key: Key, step: datetime) -> Bucket:
    steps = out.setdefault(key, {})
    bucket = steps.get(step)
    if bucket is None:
        bucket = steps[step] = Bucket()
    return bucket


def merged(steps: dict[datetime, Bucket]) -> Bucket:
    """All steps of one key in one bucket."""
    total = Bucket()
    for bucket in steps.values():
        total.merge(bucket)
    return total
