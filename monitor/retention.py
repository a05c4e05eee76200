"""The retention job: delete raw results and rollups past their configured age, in small batches.

Raw results are never deleted before the rollup job has covered them, so trends keep every
result even when the daemon was down for longer than `raw_days`. Deletes run in batches, each in
its own short transaction, so the result writer is never blocked for long (SQLite has one writer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.config import RetentionSettings
from monitor.loadtest.repo import STALE_AFTER_S, LoadStore
from monitor.store.doctor_repo import DoctorStore
from monitor.store.fingerprint_repo import FingerprintStore
from monitor.store.models_rollups import HOUR_S, MINUTE_S, ProbeRollupRow
from monitor.store.models_server_metrics import ServerMetricRollupRow
from monitor.store.repo import Store
from monitor.store.rollups import Rollups
from monitor.store.server_metrics_repo import ServerMetricsStore
from monitor.store.server_rollups import ServerRollups

__all__ = ["DEFAULT_BATCH_ROWS", "Retention", "RetentionReport"]

logger = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 5000


@dataclass(frozen=True, slots=True)
class RetentionReport:
    raw_deleted: int
    minute_rollups_deleted: int
    hour_rollups_deleted: int


class Retention:
    """Enforces `RetentionSettings` on a database it reaches through a session factory it does not own."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: RetentionSettings,
        *,
        rollups: Rollups,
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._results = Store(sessionmaker)
        self._scrapes = ServerMetricsStore(sessionmaker)
        self._fingerprints = FingerprintStore(sessionmaker)
        self._doctor = DoctorStore(sessionmaker)
        self.settings = settings
        self._rollups = rollups
        self._batch_rows = batch_rows

    async def run(self, now: datetime | None = None) -> RetentionReport:
        now = now or datetime.now(UTC)
        mark = await self._rollups.watermark()
        raw = 0
        if mark is not None:
            # Rows newer than the last rolled-up minute wait, whatever their age.
            raw = await self._delete_raw(min(now - timedelta(days=self.settings.raw_days), mark))
        minutes = hours = 0
        # Server-metrics rollups keep as long as the probe rollups of their resolution.
        for table in (ProbeRollupRow, ServerMetricRollupRow):
            minutes += await self._delete_rollups(
                table, MINUTE_S, now - timedelta(days=self.settings.minute_rollup_days)
            )
            hours += await self._delete_rollups(table, HOUR_S, now - timedelta(days=self.settings.hour_rollup_days))
        report = RetentionReport(raw, minutes, hours)
        # The daemon's scrapes of targets' /metrics keep as long as raw results (a load run's go with the run).
        scrape_cutoff = now - timedelta(days=self.settings.raw_days)
        # As raw results: never before the rollups covered them (none yet: none rolled up, none deleted).
        scrape_mark = await ServerRollups(self._sessionmaker).watermark()
        scrapes = 0
        if scrape_mark is not None:
            rolled = min(scrape_cutoff, scrape_mark)
            scrapes = await self._in_batches(lambda: self._scrapes.delete_before(rolled, limit=self._batch_rows))
        if scrapes:
            logger.info("retention: deleted %d server-metrics scrapes", scrapes)
        # Recorded fingerprints keep as long as raw results; accepted baselines are kept for good.
        readings = await self._in_batches(
            lambda: self._fingerprints.delete_before(scrape_cutoff, limit=self._batch_rows)
        )
        if readings:
            logger.info("retention: deleted %d fingerprint readings", readings)
        # Scheduled doctor reports keep as long as raw results.
        reports = await self._in_batches(lambda: self._doctor.delete_before(scrape_cutoff, limit=self._batch_rows))
        if reports:
            logger.info("retention: deleted %d doctor reports", reports)
        if raw or minutes or hours:
            logger.info("retention: deleted %d raw results, %d minute and %d hour rollups", raw, minutes, hours)
        # A load-test runner killed with -9 cannot mark its own run; its stopped heartbeat does.
        aborted = await LoadStore(self._sessionmaker).abort_stale(now, STALE_AFTER_S)
        if aborted:
            logger.warning("load runs %s stopped sending heartbeats: marked aborted", aborted)
        return report

    async def _delete_raw(self, cutoff: datetime) -> int:
        return await self._in_batches(lambda: self._results.delete_results(before=cutoff, limit=self._batch_rows))

    async def _delete_rollups(self, table: Any, resolution_s: int, cutoff: datetime) -> int:
        key = list(table.__table__.primary_key.columns)
        old = (
            select(*key).where(table.resolution_s == resolution_s, table.bucket_start < cutoff).limit(self._batch_rows)
        )
        statement = delete(table).where(tuple_(*key).in_(old)).execution_options(synchronize_session=False)

        async def one_batch() -> int:
            async with self._sessionmaker() as session, session.begin():
                result = await session.execute(statement)
            return int(getattr(result, "rowcount", 0) or 0)

        return await self._in_batches(one_batch)

    async def _in_batches(self, delete_batch: Callable[[], Awaitable[int]]) -> int:
        """Run `delete_batch` (which deletes at most `batch_rows` rows) until it deletes fewer."""
        total = 0
        while True:
            deleted = await delete_batch()
            total += deleted
            if deleted < self._batch_rows:
                return total
            # Let the result writer in between batches.
            await asyncio.sleep(0)
