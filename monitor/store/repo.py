"""Queries: write probe results, read them back as plain frozen dataclasses."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from monitor.errors import StoreError
from monitor.results import TEXT_SAMPLE_CHARS, CheckResult, ProbeResult
from monitor.store.db import censor_url, describe_error
from monitor.store.models import (
    ERROR_DETAIL_MAX_CHARS,
    NAME_MAX_CHARS,
    REASON_MAX_CHARS,
    ProbeResultRow,
    ResultSource,
)

__all__ = ["Store", "StoredResult"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredResult:
    """One row of `probe_results`, detached from the session."""

    id: int
    started_at: datetime  # timezone-aware UTC
    probe: str
    target: str
    endpoint: str
    stream: bool
    ok: bool
    error_kind: str | None
    error_detail: str | None
    timeout_phase: str | None
    http_status: int | None
    ttft_ms: float | None
    latency_ms: float | None
    itl_ms_mean: float | None
    itl_ms_p95: float | None
    itl_ms_max: float | None
    chunk_count: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_estimated: bool | None
    finish_reason: str | None
    stop_reason: str | None
    max_tokens: int | None
    truncated: bool
    text_sample: str | None
    checks: tuple[CheckResult, ...]
    failed_checks: tuple[str, ...]
    load_run_id: int | None
    source: str  # daemon | probe | doctor (see `monitor.store.models.ResultSource`)
    sanitised: bool  # the server's text was cleaned before it was stored (see monitor.untrusted)


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
        return [_from_row(row) for row in rows]

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

    @asynccontextmanager
    async def _session(self, operation: str) -> AsyncIterator[AsyncSession]:
        """A session whose database failures surface as StoreError naming the operation and URL."""
        try:
            async with self._sessionmaker() as session:
                yield session
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot {operation}{self._where}: {describe_error(exc)}") from exc


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
    m = result.measurement
    stop_reason = None if m is None or m.stop_reason is None else str(m.stop_reason)
    return ProbeResultRow(
        started_at=result.started_at,
        probe=result.probe,
        target=result.target,
        endpoint=result.endpoint,
        stream=result.stream,
        ok=result.ok,
        error_kind=result.error_kind,
        error_detail=_cap(result.error_detail, ERROR_DETAIL_MAX_CHARS),
        timeout_phase=result.timeout_phase,
        http_status=result.http_status,
        ttft_ms=m.ttft_ms if m else None,
        latency_ms=result.latency_ms,
        itl_ms_mean=result.itl_ms_mean,
        itl_ms_p95=result.itl_ms_p95,
        itl_ms_max=max(m.itl_ms) if m and m.itl_ms else None,
        chunk_count=m.chunk_count if m else None,
        prompt_tokens=m.prompt_tokens if m else None,
        completion_tokens=m.completion_tokens if m else None,
        tokens_estimated=m.tokens_estimated if m else None,
        finish_reason=_cap(m.finish_reason if m else None, REASON_MAX_CHARS),
        stop_reason=_cap(stop_reason, REASON_MAX_CHARS),
        max_tokens=result.max_tokens,
        truncated=result.truncated,
        text_sample=_cap(m.text if m else None, TEXT_SAMPLE_CHARS),
        checks=[check.to_json() for check in result.checks],
        failed_checks=",".join(check.name for check in result.failed_checks()),
        load_run_id=load_run_id,
        source=source,
        sanitised=result.sanitised,
    )


def _from_row(row: ProbeResultRow) -> StoredResult:
    checks: list[dict[str, Any]] = row.checks
    return StoredResult(
        id=row.id,
        started_at=row.started_at,
        probe=row.probe,
        target=row.target,
        endpoint=row.endpoint,
        stream=row.stream,
        ok=row.ok,
        error_kind=row.error_kind,
        error_detail=row.error_detail,
        timeout_phase=row.timeout_phase,
        http_status=row.http_status,
        ttft_ms=row.ttft_ms,
        latency_ms=row.latency_ms,
        itl_ms_mean=row.itl_ms_mean,
        itl_ms_p95=row.itl_ms_p95,
        itl_ms_max=row.itl_ms_max,
        chunk_count=row.chunk_count,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        tokens_estimated=row.tokens_estimated,
        finish_reason=row.finish_reason,
        stop_reason=row.stop_reason,
        max_tokens=row.max_tokens,
        truncated=row.truncated,
        text_sample=row.text_sample,
        checks=tuple(CheckResult(name=c["name"], passed=c["passed"], detail=c["detail"]) for c in checks),
        failed_checks=tuple(row.failed_checks.split(",")) if row.failed_checks else (),
        load_run_id=row.load_run_id,
        source=row.source,
        sanitised=row.sanitised,
    )


def _cap(value: str | None, max_chars: int) -> str | None:
    return value if value is None or len(value) <= max_chars else value[:max_chars]
