"""Server-metrics rollups on both real backends: computed by the rollup job, equal to the raw aggregates,
idempotent, serving 30-day charts and windows after the raw scrapes are gone, NULL facts kept NULL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from monitor.alerts.source import RawWindowSource, ServerWindowSource
from monitor.config import RetentionSettings, parse_settings
from monitor.retention import Retention
from monitor.server_metrics import ServerSample, interval, parse_exposition
from monitor.store.models_rollups import HOUR_S, MINUTE_S
from monitor.store.models_server_metrics import ServerMetricRollupRow
from monitor.store.rollups import Rollups
from monitor.store.server_metrics_repo import ServerMetricsStore, ServerStep
from monitor.store.server_rollups import ServerRollups

NOW = datetime(2026, 12, 1, 12, 0, 7, tzinfo=UTC)
SCRAPE_S = 20.0
# The probe page's 30-day window: 4-hour steps.
MONTH_SINCE = NOW - timedelta(days=30)
STEP_S = 4 * HOUR_S

pytestmark = pytest.mark.timeout(120)


def _exposition(i: int) -> str:
    """vLLM-style /metrics after `i` scrapes: two gauges and a counter; no preemptions, no prefix cache."""
    return (
        f"vllm:num_requests_waiting {i % 5}\n"
        f"vllm:kv_cache_usage_perc {(i % 10) / 10}\n"
        f"vllm:generation_tokens_total {10 * i * (i + 1) // 2}\n"
    )


async def _scrape_block(store: ServerMetricsStore, start: datetime, n: int) -> None:
    """`n` scrapes every SCRAPE_S from `start`, each stored as the interval from the previous one."""
    prev: ServerSample | None = None
    for i in range(n):
        cur = parse_exposition(_exposition(i))
        values = interval(prev, cur, SCRAPE_S)
        await store.add("vllm", start + timedelta(seconds=SCRAPE_S * i), values=values, interval_s=SCRAPE_S)
        prev = cur


async def _rows(sessionmaker: async_sessionmaker[AsyncSession]) -> list[tuple[Any, ...]]:
    r = ServerMetricRollupRow
    query = select(r.resolution_s, r.target, r.bucket_start, r.scrapes, r.errors, r.metrics).order_by(
        r.resolution_s, r.target, r.bucket_start
    )
    async with sessionmaker() as session:
        return [tuple(row) for row in (await session.execute(query)).all()]


def _assert_same_steps(got: list[ServerStep], want: list[ServerStep]) -> None:
    assert [(s.start, s.scrapes) for s in got] == [(s.start, s.scrapes) for s in want]
    for g, w in zip(got, want, strict=True):
        assert g.max == w.max
        assert g.mean == pytest.approx(w.mean)


async def test_rollups_match_raw_and_outlive_the_raw_scrapes(engine: AsyncEngine) -> None:
    sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(engine, expire_on_commit=False)
    store = ServerMetricsStore(sessionmaker)
    old = NOW - timedelta(days=29, minutes=17)  # an hour and a half, 29 days ago
    await _scrape_block(store, old, 270)
    await _scrape_block(store, NOW - timedelta(hours=2), 350)  # up to just before NOW
    await store.add("vllm", NOW - timedelta(hours=1), values=None, error="connection refused")
    await store.add("other", old, values=interval(None, parse_exposition(_exposition(3)), SCRAPE_S))

    # Before any rollup: every raw scrape answers.
    raw_steps = await store.steps("vllm", since=MONTH_SINCE, until=NOW, step_s=STEP_S)
    raw_minutes = await store.steps("vllm", since=NOW - timedelta(hours=1), until=NOW, step_s=MINUTE_S)
    waiting = await store.values("requests_waiting", "vllm", since=MONTH_SINCE, until=NOW)
    tokens = await store.values("generation_tokens_per_s", "vllm", since=MONTH_SINCE, until=NOW)
    assert len(waiting) == 620 and len(tokens) == 618  # each block's first interval has no rate
    assert sum(s.scrapes for s in raw_steps) == 620

    # The daemon's rollup job rolls the server's metrics up too.
    assert await Rollups(sessionmaker).run(NOW) > 0
    rows = await _rows(sessionmaker)
    assert {r[1] for r in rows} == {"vllm", "other"}
    assert any(r[0] == HOUR_S for r in rows) and any(r[4] == 1 for r in rows)  # the failed scrape is counted
    # Never exposed: no histogram at all, so it reads back as None, not 0.
    assert all("preemptions" not in r[5] and "prefix_cache_hit_ratio" not in r[5] for r in rows)

    _assert_same_steps(await store.steps("vllm", since=MONTH_SINCE, until=NOW, step_s=STEP_S), raw_steps)
    _assert_same_steps(
        await store.steps("vllm", since=NOW - timedelta(hours=1), until=NOW, step_s=MINUTE_S), raw_minutes
    )

    # A rerun (and one by a second job instance) rewrites the same rows.
    await Rollups(sessionmaker).run(NOW)
    await ServerRollups(sessionmaker).run(NOW)
    assert await _rows(sessionmaker) == rows

    # Raw scrapes past raw_days go; the month is still there, from rollups.
    report_settings = RetentionSettings(raw_days=14, minute_rollup_days=30, hour_rollup_days=400)
    await Retention(sessionmaker, report_settings, rollups=Rollups(sessionmaker)).run(NOW)
    assert await store.values("requests_waiting", "vllm", since=MONTH_SINCE, until=NOW - timedelta(days=14)) == []
    month = await store.steps("vllm", since=MONTH_SINCE, until=NOW, step_s=STEP_S)
    _assert_same_steps(month, raw_steps)
    assert all(s.mean["preemptions"] is None and s.max["server_ttft_ms_p95"] is None for s in month)

    # A 30-day alert window over the rollups: the raw window's mean and max, its count of scrapes.
    window = await store.window("requests_waiting", "vllm", since=MONTH_SINCE, until=NOW)
    assert window is not None and window.count == len(waiting)
    assert window.max == max(waiting) and window.mean == pytest.approx(sum(waiting) / len(waiting))
    rate = await store.window("generation_tokens_per_s", "vllm", since=MONTH_SINCE, until=NOW)
    assert rate is not None and rate.count == len(tokens) and rate.max == max(tokens)
    assert await store.window("preemptions", "vllm", since=MONTH_SINCE, until=NOW) is None


async def test_retention_ages_server_rollups_like_probe_rollups(engine: AsyncEngine) -> None:
    sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(engine, expire_on_commit=False)
    store = ServerMetricsStore(sessionmaker)
    start = NOW - timedelta(days=3, hours=2)
    await _scrape_block(store, start, 200)  # 66 minutes
    await store.add("vllm", NOW - timedelta(minutes=10), values=interval(None, parse_exposition(_exposition(1)), 1))
    assert await ServerRollups(sessionmaker).run(start + timedelta(hours=3)) > 0
    await ServerRollups(sessionmaker).run(NOW)
    before = await _rows(sessionmaker)
    settings = RetentionSettings(raw_days=1, minute_rollup_days=2, hour_rollup_days=4)
    await Retention(sessionmaker, settings, rollups=Rollups(sessionmaker)).run(NOW)
    after = await _rows(sessionmaker)
    cutoff = NOW - timedelta(days=2)
    assert [r for r in before if r[0] == HOUR_S] == [r for r in after if r[0] == HOUR_S]
    assert [r for r in after if r[0] == MINUTE_S] == [r for r in before if r[0] == MINUTE_S and r[2] >= cutoff]
    assert any(r[0] == MINUTE_S and r[2] < cutoff for r in before)
    # The 3-day-old hours still chart, though their minutes and raw scrapes are gone.
    steps = await store.steps("vllm", since=start - timedelta(hours=1), until=NOW, step_s=HOUR_S)
    assert sum(s.scrapes for s in steps) == 201


async def test_a_30_day_alert_window_reads_rollups_after_raw_retention(engine: AsyncEngine) -> None:
    sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(engine, expire_on_commit=False)
    store = ServerMetricsStore(sessionmaker)
    settings = parse_settings({
        "targets": [{"name": "vllm", "base_url": "http://127.0.0.1:9/v1"}],
        "probes": [{"name": "chat", "target": "vllm", "endpoint": "completion", "prompt": "hi"}],
    })  # fmt: skip
    source = ServerWindowSource(RawWindowSource(sessionmaker), store, lambda: settings)
    await _scrape_block(store, NOW - timedelta(days=20), 90)
    await _scrape_block(store, NOW - timedelta(minutes=30), 60)
    waiting = await store.values("requests_waiting", "vllm", since=MONTH_SINCE, until=NOW)

    async def month(metric: str, agg: str) -> tuple[float | None, int]:
        got = await source.aggregate(metric=metric, agg=agg, probe="chat", since=MONTH_SINCE, until=NOW)
        return got.value, got.count

    await Rollups(sessionmaker).run(NOW)
    await Retention(sessionmaker, RetentionSettings(raw_days=14), rollups=Rollups(sessionmaker)).run(NOW)
    assert len(await store.values("requests_waiting", "vllm", since=MONTH_SINCE, until=NOW)) == 60
    assert await month("server_requests_waiting", "max") == (max(waiting), len(waiting))
    mean, samples = await month("server_requests_waiting", "mean")
    assert samples == 150 and mean == pytest.approx(sum(waiting) / len(waiting))
    assert await month("server_preemptions", "max") == (None, 0)  # never exposed: no value, not 0
    # An hour's window is still exact, from raw scrapes.
    hour = await source.aggregate(
        metric="server_requests_waiting", agg="p50", probe="chat", since=NOW - timedelta(hours=1), until=NOW
    )
    assert hour.count == 60
