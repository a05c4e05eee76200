"""Queries on `probe_results`: every read and write of the table outside the trend readers.

Reads return the typed views of `monitor.store.views`, never ORM rows. `Store` is handed a
session factory it does not own, and every database failure surfaces as `StoreError` naming the
operation (and the censored URL).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, case, delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from monitor.errors import StoreError
from monitor.results import TEXT_SAMPLE_CHARS, CheckResult, ProbeResult, percentile
from monitor.store.db import censor_url, describe_error
from monitor.store.models import (
    DAEMON_RESULTS,
    ERROR_DETAIL_MAX_CHARS,
    NAME_MAX_CHARS,
    ONESHOT_SOURCES,
    REASON_MAX_CHARS,
    ProbeResultRow,
    ResultSource,
)
from monitor.store.views import RESULT_LINE_COLUMNS, CanaryStats, OneShotRow, ResultLine, StoredResult

__all__ = ["Store", "StoredResult", "delete_chosen", "store_session"]

logger = logging.getLogger(__name__)


class Store:
    """Reads and writes results through a session factory it does not own (and never closes)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        bind = sessionmaker.kw.get("bind")
        # An AsyncConnection (tests joining an outer transaction) has no .url of its own.
        url = getattr(getattr(bind, "engine", bind), "url", None)
        self._where = f" in {censor_url(url)}" if url is not None else ""

    @classmethod
    def from_engine(cls, engine: AsyncEngine) -> Store:
        """A Store with its own session factory on `engine` (the engine stays the caller's)."""
        return cls(async_sessionmaker(engine, expire_on_commit=False))

    async def add_results(
        self, results: Sequence[ProbeResult], *, load_run_id: int | None = None, source: ResultSource = "daemon"
    ) -> list[int]:
        """Insert `results` in one transaction and return their ids, in order.

        `source` says who made them: one-shot commands pass theirs, so daemon reads can leave them out.
        """
        rows = [_to_row(result, load_run_id, source) for result in results]
        if not rows:
            return []
        async with self._session(f"write {len(rows)} probe results") as session, session.begin():
            session.add_all(rows)
            await session.flush()
            ids = [row.id for row in rows]
        logger.debug("stored %d probe results", len(ids))
        return ids

    async def recent_results(
        self,
        *,
        probe: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        source: ResultSource | None = None,
        limit: int = 100,
    ) -> list[StoredResult]:
        """Results newest first, optionally for one probe/target/source and from `since` (inclusive) on."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        query = (
            select(ProbeResultRow)
            .where(*_filters(probe, target, since, source))
            .order_by(ProbeResultRow.started_at.desc(), ProbeResultRow.id.desc())
            .limit(limit)
        )
        async with self._session("read probe results") as session:
            rows = (await session.scalars(query)).all()
        return [StoredResult.of_row(row) for row in rows]

    async def count_results(
        self,
        *,
        probe: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        source: ResultSource | None = None,
    ) -> int:
        query = select(func.count()).select_from(ProbeResultRow).where(*_filters(probe, target, since, source))
        async with self._session("count probe results") as session:
            return (await session.execute(query)).scalar_one()

    async def last_results(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], ResultLine]:
        """The newest daemon result of each (probe, target): an indexed LIMIT 1 lookup each, compiled once."""
        out: dict[tuple[str, str], ResultLine] = {}
        async with self._session("read the newest results") as session:
            for probe, target in keys:
                row = (await session.execute(_LAST_QUERY, {"probe": probe, "target": target})).first()
                if row is not None:
                    out[(probe, target)] = ResultLine.of_columns(row)
        return out

    async def first_result_at(
        self, *, probe: str | None = None, target: str | None = None, source: ResultSource | None = None
    ) -> datetime | None:
        """When the oldest matching result started (None: there is none)."""
        query = (
            select(ProbeResultRow.started_at)
            .where(*_filters(probe, target, None, source))
            .order_by(ProbeResultRow.started_at)
            .limit(1)
        )
        async with self._session("read the oldest result") as session:
            return (await session.execute(query)).scalar_one_or_none()

    async def oneshot_rows(self, *, since: datetime, limit: int) -> list[OneShotRow]:
        """Results of one-shot commands from `since` on, per (source, probe, target), newest first."""
        r = ProbeResultRow
        last_at = func.max(r.started_at)
        query = (
            select(r.source, r.probe, r.target, func.count(), func.sum(case((r.ok, 0), else_=1)), last_at)
            .where(r.source.in_(ONESHOT_SOURCES), *_filters(None, None, since, None))
            .group_by(r.source, r.probe, r.target)
            .order_by(last_at.desc())
            .limit(limit)
        )
        async with self._session("read one-shot results") as session:
            rows = (await session.execute(query)).all()
        # max() of a TypeDecorator column comes back through it: an aware UTC datetime on both backends.
        return [OneShotRow(src, probe, target, int(n), int(bad or 0), at) for src, probe, target, n, bad, at in rows]

    async def link_canaries(self, run_id: int, start: datetime, end: datetime) -> int:
        """Link results stored from `start` to `end` (by any process, and not linked yet) to load run `run_id`."""
        r = ProbeResultRow
        window = and_(r.started_at >= start, r.started_at <= end, r.load_run_id.is_(None))
        async with self._session("link canaries to a load run") as session, session.begin():
            result = await session.execute(update(r).where(window).values(load_run_id=run_id))
        return int(getattr(result, "rowcount", 0) or 0)

    async def canaries(self, run_id: int, *, limit: int) -> list[ResultLine]:
        """The results linked to load run `run_id`, oldest first."""
        query = (
            select(*RESULT_LINE_COLUMNS)
            .where(ProbeResultRow.load_run_id == run_id)
            .order_by(ProbeResultRow.started_at, ProbeResultRow.id)
            .limit(limit)
        )
        async with self._session("read canaries of a load run") as session:
            rows = (await session.execute(query)).all()
        return [ResultLine.of_columns(row) for row in rows]

    async def canary_stats(self, run_id: int) -> CanaryStats:
        query = select(ProbeResultRow.ok, ProbeResultRow.ttft_ms).where(ProbeResultRow.load_run_id == run_id)
        async with self._session("read canaries of a load run") as session:
            rows = (await session.execute(query)).all()
        ttfts = [ttft for _, ttft in rows if ttft is not None]
        return CanaryStats(
            count=len(rows),
            ok=sum(1 for ok, _ in rows if ok),
            ttft_p95_ms=round(percentile(ttfts, 95.0), 3) if ttfts else None,
        )

    async def delete_results(self, *, before: datetime, limit: int) -> int:
        """Delete at most `limit` results that started before `before`, in one short transaction; returns how many."""
        ids = select(ProbeResultRow.id).where(ProbeResultRow.started_at < before).limit(limit)
        statement = (
            delete(ProbeResultRow).where(ProbeResultRow.id.in_(ids)).execution_options(synchronize_session=False)
        )
        async with self._session("delete old results") as session, session.begin():
            result = await session.execute(statement)
        return int(getattr(result, "rowcount", 0) or 0)

    def _session(self, operation: str) -> AbstractAsyncContextManager[AsyncSession]:
        return store_session(self._sessionmaker, operation, self._where)


@asynccontextmanager
async def store_session(
    sessionmaker: async_sessionmaker[AsyncSession], operation: str, where: str = ""
) -> AsyncIterator[AsyncSession]:
    """A session whose database failures surface as StoreError naming the operation (and `where`: the URL)."""
    try:
        async with sessionmaker() as session:
            yield session
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"cannot {operation}{where}: {describe_error(exc)}") from exc


async def delete_chosen(
    sessionmaker: async_sessionmaker[AsyncSession], table: Any, ids: Select[Any], operation: str
) -> int:
    """Delete the rows of ``table`` whose ``id`` the (limited) ``ids`` query picks; the number deleted.

    Retention deletes old rows in batches this way, so one call never holds a long lock.
    """
    statement = delete(table).where(table.id.in_(ids.scalar_subquery())).execution_options(synchronize_session=False)
    async with store_session(sessionmaker, operation) as session, session.begin():
        result = await session.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)


_LAST_QUERY = (
    select(*RESULT_LINE_COLUMNS)
    .where(DAEMON_RESULTS, ProbeResultRow.probe == bindparam("probe"), ProbeResultRow.target == bindparam("target"))
    .order_by(ProbeResultRow.started_at.desc(), ProbeResultRow.id.desc())
    .limit(1)
)


def _filters(
    probe: str | None, target: str | None, since: datetime | None, source: ResultSource | None
) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if source is not None:
        filters.append(ProbeResultRow.source == source)
    if probe is not None:
        filters.append(ProbeResultRow.probe == probe)
    if target is not None:
        filters.append(ProbeResultRow.target == target)
    if since is not None:
        if since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        filters.append(ProbeResultRow.started_at >= since)
    return filters


def _to_row(result: ProbeResult, load_run_id: int | None, source: ResultSource) -> ProbeResultRow:
    for field, value in (("probe", result.probe), ("target", result.target)):
        if len(value) > NAME_MAX_CHARS:
            raise ValueError(f"{field} name {value[:40]!r}... is longer than {NAME_MAX_CHARS} characters")
    if result.started_at.tzinfo is None:
        raise ValueError(f"started_at of probe {result.probe!r} must be timezone-aware")
    values = result.flat()
    stop_reason = values["stop_reason"]
    checks: tuple[CheckResult, ...] = values.pop("checks")
    values.update(
        error_detail=_cap(values["error_detail"], ERROR_DETAIL_MAX_CHARS),
        finish_reason=_cap(values["finish_reason"], REASON_MAX_CHARS),
        # vLLM's stop token ids are ints; the column keeps them as decimal text.
        stop_reason=_cap(None if stop_reason is None else str(stop_reason), REASON_MAX_CHARS),
        text_sample=_cap(values.pop("text"), TEXT_SAMPLE_CHARS),
        checks=[check.to_json() for check in checks],
        failed_checks=",".join(check.name for check in result.failed_checks()),
    )
    return ProbeResultRow(**values, load_run_id=load_run_id, source=source)


def _cap(value: str | None, max_chars: int) -> str | None:
    return value if value is None or len(value) <= max_chars else value[:max_chars]
