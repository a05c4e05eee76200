"""Retention on both real backends: age cutoffs, batches, never ahead of rollups, bounded size."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from monitor.config import RetentionSettings
from monitor.loadtest.repo import STALE_AFTER_S, LoadStore
from monitor.retention import Retention
from monitor.store.models import ProbeResultRow
from monitor.store.models_rollups import HOUR_S, MINUTE_S, ProbeRollupRow
from monitor.store.repo import Store
from monitor.store.rollups import Rollups
from tests.test_rollups import make_result

DAY0 = datetime(2026, 11, 1, tzinfo=UTC)


async def _counts(engine: AsyncEngine) -> tuple[int, int, int]:
    async with engine.connect() as conn:
        raw = (await conn.execute(select(func.count()).select_from(ProbeResultRow))).scalar_one()
        by_res = dict(
            (
                await conn.execute(
                    select(ProbeRollupRow.resolution_s, func.count()).group_by(ProbeRollupRow.resolution_s)
                )
            ).all()
        )
    return raw, by_res.get(MINUTE_S, 0), by_res.get(HOUR_S, 0)


async def _add_day(store: Store, day: datetime, per_day: int) -> None:
    step = timedelta(days=1) / per_day
    await store.add_results([make_result(day + i * step, latency_ms=50.0 + i) for i in range(per_day)])


async def test_retention_deletes_by_age_in_batches(engine: AsyncEngine) -> None:
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    store = Store.from_engine(engine)
    rollups = Rollups(sessionmaker)
    settings = RetentionSettings(raw_days=2, minute_rollup_days=3, hour_rollup_days=4)
    retention = Retention(sessionmaker, settings, rollups=rollups, batch_rows=7)
    for day in range(5):
        await _add_day(store, DAY0 + timedelta(days=day), per_day=24)  # one result per hour
    now = DAY0 + timedelta(days=5)
    assert await _counts(engine) == (120, 0, 0)

    # Nothing is rolled up yet, so no raw row may go.
    report = await retention.run(now)
    assert report.raw_deleted == 0 and await _counts(engine) == (120, 0, 0)

    await rollups.run(now)
    # Hours: one row per probe and hour, plus the hour's fleet-wide row.
    assert await _counts(engine) == (120, 120, 2 * 120)
    report = await retention.run(now)
    # Raw: days 3-4 stay; minute rollups: days 2-4; hour rollups: days 1-4.
    assert (report.raw_deleted, report.minute_rollups_deleted, report.hour_rollups_deleted) == (72, 48, 2 * 24)
    assert await _counts(engine) == (48, 72, 2 * 96)
    async with sessionmaker() as session:
        oldest = (await session.execute(select(func.min(ProbeResultRow.started_at)))).scalar_one()
    assert oldest == DAY0 + timedelta(days=3)
    # The rollups still answer for days whose raw rows are gone.
    assert (await rollups.window(since=DAY0 + timedelta(days=1), until=now)).results == 96
    assert (await retention.run(now)) == type(report)(0, 0, 0)


async def test_database_size_stays_bounded(engine: AsyncEngine) -> None:
    """Simulated weeks of results: row counts and (on SQLite) the file's page count stop growing."""
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    store = Store.from_engine(engine)
    rollups = Rollups(sessionmaker)
    settings = RetentionSettings(raw_days=2, minute_rollup_days=3, hour_rollup_days=5)
    retention = Retention(sessionmaker, settings, rollups=rollups, batch_rows=500)
    counts: list[tuple[int, int, int]] = []
    pages: list[int] = []
    for day in range(12):
        await _add_day(store, DAY0 + timedelta(days=day), per_day=400)
        now = DAY0 + timedelta(days=day + 1)
        await rollups.run(now)
        await retention.run(now)
        counts.append(await _counts(engine))
        pages.append(await _sqlite_pages(engine))
    # From day 6 on every table is at its steady size.
    assert len(set(counts[6:])) == 1, counts
    assert counts[-1] == (800, 1200, 2 * 5 * 24)  # hour rows: the probe's and the fleet's
    if engine.dialect.name == "sqlite":
        # Freed pages are reused: the file stops growing once retention deletes as much as is added.
        assert max(pages[6:]) <= pages[5] * 1.05, pages


async def _sqlite_pages(engine: AsyncEngine) -> int:
    if engine.dialect.name != "sqlite":
        return 0
    async with engine.connect() as conn:
        return int((await conn.execute(text("PRAGMA page_count"))).scalar_one())


async def test_retention_without_rollups_run_keeps_raw_rows(engine: AsyncEngine) -> None:
    sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(engine, expire_on_commit=False)
    await Store.from_engine(engine).add_results([make_result(DAY0)])
    retention = Retention(sessionmaker, RetentionSettings(raw_days=1), rollups=Rollups(sessionmaker))
    assert (await retention.run(DAY0 + timedelta(days=30))).raw_deleted == 0


async def test_retention_marks_a_killed_load_run_aborted(engine: AsyncEngine) -> None:
    """A runner killed with -9 leaves its run `running`; the daemon's retention job ends that."""
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    loads = LoadStore(sessionmaker)
    started = DAY0 + timedelta(hours=1)
    dead = await loads.create_run(started_at=started, target="t", base_url="http://x/v1", model=None, params={},
                                  baseline_id=None)  # fmt: skip
    alive = await loads.create_run(started_at=started, target="t", base_url="http://x/v1", model=None, params={},
                                   baseline_id=None)  # fmt: skip
    now = started + timedelta(seconds=STALE_AFTER_S * 3)
    await loads.heartbeat(alive, now - timedelta(seconds=5))
    retention = Retention(sessionmaker, RetentionSettings(), rollups=Rollups(sessionmaker))
    await retention.run(now)
    statuses = []
    for run_id in (dead, alive):
        run = await loads.get_run(run_id)
        assert run is not None
        statuses.append(run.status)
    assert statuses == ["aborted", "running"]
