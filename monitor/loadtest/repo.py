"""Queries of the loadtest feature: load runs and their per-second series.

Canaries (the probe results linked to a run) are rows of `probe_results`, so their queries are
``monitor.store.Store``'s; ``LoadStore`` hands them on.

``LoadStore`` is handed a session factory it does not own (like ``monitor.store.Store``). Every
database failure surfaces as ``StoreError`` naming the operation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from monitor.loadtest.server_values import second_of
from monitor.store.models_loadtest import LoadRunRow, LoadSeriesRow
from monitor.store.repo import Store, store_session
from monitor.store.server_metrics_load import load_run_points
from monitor.store.views import CanaryStats

__all__ = ["LoadRun", "LoadStore", "SeriesPoint"]

logger = logging.getLogger(__name__)

ABORT_REASON_MAX_CHARS = 2000


# A `running` row whose heartbeat is older than this belongs to a runner that was killed.
STALE_AFTER_S = 120.0


@dataclass(frozen=True, slots=True)
class LoadRun:
    """One row of ``load_runs``, detached from the session."""

    id: int
    started_at: datetime
    ended_at: datetime | None
    heartbeat_at: datetime
    status: str
    target: str
    base_url: str
    model: str | None
    params: dict[str, Any]
    summary: dict[str, Any] | None
    slo: list[dict[str, Any]]
    verdict: str | None
    baseline_id: int | None
    abort_reason: str | None


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One second of a run (the columns of ``load_series``)."""

    t_s: int
    ts: datetime
    users: int | None
    requests: int
    failures: int
    sent: int
    output_tokens: int
    truncated: int
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    itl_p50_ms: float | None
    itl_p95_ms: float | None
    e2e_p50_ms: float | None
    e2e_p95_ms: float | None
    lag_p95_ms: float | None
    errors: dict[str, int]
    # Migration 0007. TTFA is TTFT's sample when the model did not reason; reasoning tokens are in output_tokens.
    ttfa_p50_ms: float | None = None
    ttfa_p95_ms: float | None = None
    reasoning_tokens: int = 0
    # Migration 0014: requests that met every --goodput clause, of those judged; the generator's timing error.
    good: int = 0
    goodput_judged: int = 0
    read_lag_p99_ms: float | None = None
    ttft_err_p99_ms: float | None = None
    # The server's own /metrics in this second (`server_metrics` rows, by FIELDS name); None: not scraped.
    server: dict[str, float | None] | None = None

    def to_json(self) -> dict[str, Any]:
        """The one JSON form of a stored second: every column under its name, `ts` in ISO 8601, `server`."""
        return {**{name: getattr(self, name) for name in _SERIES_FIELDS}, "ts": self.ts.isoformat(),
                "server": self.server}  # fmt: skip


# The load_series columns (the server's values are rows of server_metrics).
_SERIES_FIELDS = tuple(name for name in SeriesPoint.__dataclass_fields__ if name != "server")


class LoadStore:
    """Reads and writes load runs through a session factory it does not own."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        # Canaries are probe results: their queries are the result store's.
        self._results = Store(sessionmaker)

    @classmethod
    def from_engine(cls, engine: AsyncEngine) -> LoadStore:
        return cls(async_sessionmaker(engine, expire_on_commit=False))

    async def create_run(
        self,
        *,
        started_at: datetime,
        target: str,
        base_url: str,
        model: str | None,
        params: dict[str, Any],
        baseline_id: int | None,
    ) -> int:
        row = LoadRunRow(
            started_at=started_at, heartbeat_at=started_at, status="running", target=target, base_url=base_url,
            model=model, params=params, slo=[], baseline_id=baseline_id,
        )  # fmt: skip
        async with self._session("create a load run") as session, session.begin():
            session.add(row)
            await session.flush()
            return row.id

    async def heartbeat(self, run_id: int, now: datetime) -> None:
        async with self._session("update a load run") as session, session.begin():
            await session.execute(update(LoadRunRow).where(LoadRunRow.id == run_id).values(heartbeat_at=now))

    async def save_series(self, run_id: int, points: Sequence[SeriesPoint]) -> None:
        """Insert or replace these seconds of the run (a second can grow when a late report arrives)."""
        if not points:
            return
        seconds = [p.t_s for p in points]
        rows = [LoadSeriesRow(run_id=run_id, **{f: getattr(p, f) for f in _SERIES_FIELDS}) for p in points]
        async with self._session(f"write {len(rows)} load series rows") as session, session.begin():
            await session.execute(
                delete(LoadSeriesRow).where(LoadSeriesRow.run_id == run_id, LoadSeriesRow.t_s.in_(seconds))
            )
            session.add_all(rows)

    async def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        ended_at: datetime,
        summary: dict[str, Any] | None,
        slo: list[dict[str, Any]],
        verdict: str | None,
        abort_reason: str | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "status": status, "ended_at": ended_at, "heartbeat_at": ended_at, "summary": summary, "slo": slo,
            "verdict": verdict, "abort_reason": _cap(abort_reason),
        }  # fmt: skip
        async with self._session("finish a load run") as session, session.begin():
            await session.execute(update(LoadRunRow).where(LoadRunRow.id == run_id).values(**values))

    async def abort_stale(self, now: datetime, grace_s: float) -> list[int]:
        """Mark ``running`` runs whose heartbeat stopped more than ``grace_s`` ago as aborted."""
        cutoff = now - timedelta(seconds=grace_s)
        stale = and_(LoadRunRow.status == "running", LoadRunRow.heartbeat_at < cutoff)
        async with self._session("abort stale load runs") as session, session.begin():
            ids = list((await session.scalars(select(LoadRunRow.id).where(stale))).all())
            if ids:
                await session.execute(
                    update(LoadRunRow)
                    .where(LoadRunRow.id.in_(ids))
                    .values(status="aborted", ended_at=LoadRunRow.heartbeat_at,
                            abort_reason="the runner stopped without finishing (killed?); found at the next run")
                )  # fmt: skip
        return ids

    async def get_run(self, run_id: int) -> LoadRun | None:
        async with self._session("read a load run") as session:
            row = await session.get(LoadRunRow, run_id)
            return None if row is None else _run(row)

    async def series(self, run_id: int) -> list[SeriesPoint]:
        query = select(LoadSeriesRow).where(LoadSeriesRow.run_id == run_id).order_by(LoadSeriesRow.t_s)
        async with self._session("read a load series") as session:
            rows = (await session.scalars(query)).all()
        points = [SeriesPoint(**{f: getattr(r, f) for f in _SERIES_FIELDS}) for r in rows]
        server = {second_of(p.scraped_at): p.values for p in await load_run_points(self._sessionmaker, run_id)
                  if p.error is None}  # fmt: skip
        if not server:
            return points
        return [replace(p, server=server.get(int(p.ts.timestamp()))) for p in points]

    async def runs(self, limit: int) -> list[LoadRun]:
        """The newest `limit` runs, newest first."""
        query = select(LoadRunRow).order_by(LoadRunRow.started_at.desc(), LoadRunRow.id.desc()).limit(limit)
        async with self._session("read load runs") as session:
            return [_run(row) for row in (await session.scalars(query)).all()]

    async def link_canaries(self, run_id: int, start: datetime, end: datetime) -> int:
        """Tag probe results stored while the run was active (by any process) with its id."""
        return await self._results.link_canaries(run_id, start, end)

    async def canary_stats(self, run_id: int) -> CanaryStats:
        return await self._results.canary_stats(run_id)

    def _session(self, operation: str) -> AbstractAsyncContextManager[AsyncSession]:
        return store_session(self._sessionmaker, operation)


def _run(row: LoadRunRow) -> LoadRun:
    return LoadRun(
        id=row.id, started_at=row.started_at, ended_at=row.ended_at, heartbeat_at=row.heartbeat_at,
        status=row.status, target=row.target, base_url=row.base_url, model=row.model, params=row.params,
        summary=row.summary, slo=row.slo, verdict=row.verdict, baseline_id=row.baseline_id,
        abort_reason=row.abort_reason,
    )  # fmt: skip


def _cap(text: str | None) -> str | None:
    return text if text is None or len(text) <= ABORT_REASON_MAX_CHARS else text[:ABORT_REASON_MAX_CHARS]
