"""The `server_metrics` rows of load runs: the runner's per-second scrapes, read back for reports and pages.

The daemon's rows (`load_run_id` NULL) are `ServerMetricsStore`'s; a run's rows are written with
`ServerMetricsStore.add(..., load_run_id=...)` and go with the run (ON DELETE CASCADE).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.store.models_server_metrics import ServerMetricRow
from monitor.store.repo import store_session
from monitor.store.server_metrics_repo import ServerPoint, _point

__all__ = ["load_run_points"]


async def load_run_points(sessionmaker: async_sessionmaker[AsyncSession], run_id: int) -> list[ServerPoint]:
    """Every scrape stored for load run `run_id`, oldest first."""
    query = (
        select(ServerMetricRow)
        .where(ServerMetricRow.load_run_id == run_id)
        .order_by(ServerMetricRow.scraped_at, ServerMetricRow.id)
    )
    async with store_session(sessionmaker, "read a load run's server metrics") as session:
        rows = (await session.scalars(query)).all()
    return [_point(row) for row in rows]
