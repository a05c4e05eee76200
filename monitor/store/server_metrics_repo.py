"""Queries on `server_metrics`: the scrapes of targets' own /metrics, written and read back.

One row per scrape, as an interval (`monitor.server_metrics.ServerInterval`): the daemon's rows
have `load_run_id` NULL, a load run's per-second rows carry its id. Reads return `ServerPoint`s,
never ORM rows; every database failure surfaces as `StoreError` naming the operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from monitor.errors import StoreError
from monitor.server_metrics import FIELDS, ServerInterval
from monitor.store.bucket import Histogram
from monitor.store.db import describe_error
from monitor.store.models_server_metrics import SCRAPE_ERROR_MAX_CHARS, ServerMetricRow
from monitor.store.repo import delete_chosen, store_session
from monitor.store.server_rollups import ServerBucket, ServerRollups

__all__ = ["ServerMetricsStore", "ServerPoint", "ServerStep"]


@dataclass(frozen=True, slots=True)
class ServerPoint:
    """One stored scrape: its values by `FIELDS` name (None = not exposed), or the error that left none."""

    target: str
    scraped_at: datetime
    interval_s: float | None
    error: str | None
    values: dict[str, float | None]
    sources: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target, "scraped_at": self.scraped_at.isoformat(), "interval_s": self.interval_s,
            "error": self.error, "values": self.values, "sources": self.sources,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class ServerStep:
    """The scrapes of one chart step: per field, the mean and the max over the scrapes that exposed it."""

    start: datetime
    scrapes: int
    mean: dict[str, float | None]
    max: dict[str, float | None]


class ServerMetricsStore:
    """Reads and writes scrapes through a session factory it does not own."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._rollups = ServerRollups(sessionmaker)

    @classmethod
    def from_engine(cls, engine: AsyncEngine) -> ServerMetricsStore:
        """A store with its own session factory on `engine` (the engine stays the caller's)."""
        return cls(async_sessionmaker(engine, expire_on_commit=False))

    async def add(
        self,
        target: str,
        scraped_at: datetime,
        *,
        values: ServerInterval | None,
        interval_s: float | None = None,
        sources: dict[str, str] | None = None,
        error: str | None = None,
        load_run_id: int | None = None,
    ) -> None:
        """Store one scrape: its interval's values, or (values None) the error that left none."""
        row = ServerMetricRow(
            target=target, scraped_at=scraped_at, interval_s=interval_s, load_run_id=load_run_id,
            error=None if error is None else error[:SCRAPE_ERROR_MAX_CHARS], sources=sources or None,
            **(values.to_json() if values is not None else {}),
        )  # fmt: skip
        async with store_session(self._sessionmaker, "write a server-metrics scrape") as session, session.begin():
            session.add(row)

    async def points(
        self, target: str, *, since: datetime, until: datetime | None = None, limit: int = 10_000
    ) -> list[ServerPoint]:
        """The daemon's scrapes of `target` with since <= scraped_at < until, oldest first."""
        query = select(ServerMetricRow).where(
            ServerMetricRow.load_run_id.is_(None),
            ServerMetricRow.target == target,
            ServerMetricRow.scraped_at >= since,
        )
        if until is not None:
            query = query.where(ServerMetricRow.scraped_at < until)
        query = query.order_by(ServerMetricRow.scraped_at.desc(), ServerMetricRow.id.desc()).limit(limit)
        async with store_session(self._sessionmaker, "read server metrics") as session:
            rows = (await session.execute(query)).scalars().all()
        return [_point(row) for row in reversed(rows)]

    async def values(self, field: str, target: str, *, since: datetime, until: datetime) -> list[float]:
        """One field's values over the daemon's scrapes of `target` in [since, until), NULLs left out."""
        if field not in FIELDS:
            raise ValueError(f"unknown server metric field {field!r}")
        column = getattr(ServerMetricRow, field)
        query = select(column).where(
            ServerMetricRow.load_run_id.is_(None),
            ServerMetricRow.target == target,
            ServerMetricRow.scraped_at >= since,
            ServerMetricRow.scraped_at < until,
            column.is_not(None),
        )
        async with store_session(self._sessionmaker, "read server metrics") as session:
            return [float(v) for v in (await session.execute(query)).scalars().all()]

    async def steps(self, target: str, *, since: datetime, until: datetime, step_s: int) -> list[ServerStep]:
        """The daemon's scrapes of `target` in [since, until) summed up per `step_s` (a multiple of 60, epoch-aligned).

        Read from rollups up to their settle time, raw scrapes after it (`ServerRollups.read`): a 30-day
        window of 4-hour steps is 720 hour rows, not 170 k scrapes. Steps without an answered scrape are left out.
        """
        buckets = await self._read(target, since, until, step_s, "read server metrics per step")
        steps = []
        for start, bucket in sorted((k, b) for k, b in buckets.items() if k is not None and b.answered):
            summaries = {name: bucket.summary(name) for name in FIELDS}
            steps.append(ServerStep(
                start, bucket.answered, {name: h.mean if h else None for name, h in summaries.items()},
                {name: h.max if h else None for name, h in summaries.items()},
            ))  # fmt: skip
        return steps

    async def window(self, field: str, target: str, *, since: datetime, until: datetime) -> Histogram | None:
        """One field over the daemon's scrapes of `target` in [since, until), from rollups and the raw tail.

        None when no scrape exposed it; for long alert windows (`values` reads every raw value).
        """
        if field not in FIELDS:
            raise ValueError(f"unknown server metric field {field!r}")
        bucket = (await self._read(target, since, until, None, "read server metrics")).get(None)
        return None if bucket is None else bucket.summary(field)

    async def _read(
        self, target: str, since: datetime, until: datetime, step_s: int | None, operation: str
    ) -> dict[datetime | None, ServerBucket]:
        try:
            return await self._rollups.read(target, since=since, until=until, step_s=step_s)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot {operation}: {describe_error(exc)}") from exc

    async def latest(self, targets: Sequence[str]) -> dict[str, ServerPoint]:
        """The newest daemon scrape of each of `targets` (absent: never scraped)."""
        if not targets:
            return {}
        newest = (
            select(ServerMetricRow.target, func.max(ServerMetricRow.id).label("id"))
            .where(ServerMetricRow.load_run_id.is_(None), ServerMetricRow.target.in_(list(targets)))
            .group_by(ServerMetricRow.target)
            .subquery()
        )
        query = select(ServerMetricRow).join(newest, ServerMetricRow.id == newest.c.id)
        async with store_session(self._sessionmaker, "read the newest server metrics") as session:
            rows = (await session.execute(query)).scalars().all()
        return {row.target: _point(row) for row in rows}

    async def delete_before(self, cutoff: datetime, *, limit: int) -> int:
        """Delete up to `limit` of the daemon's scrapes older than `cutoff` (a load run's go with the run)."""
        ids = (
            select(ServerMetricRow.id)
            .where(ServerMetricRow.load_run_id.is_(None), ServerMetricRow.scraped_at < cutoff)
            .order_by(ServerMetricRow.scraped_at)
            .limit(limit)
        )
        return await delete_chosen(self._sessionmaker, ServerMetricRow, ids, "delete old server metrics")


def _point(row: ServerMetricRow) -> ServerPoint:
    values = {name: getattr(row, name) for name in FIELDS}
    return ServerPoint(row.target, row.scraped_at, row.interval_s, row.error, values, dict(row.sources or {}))
