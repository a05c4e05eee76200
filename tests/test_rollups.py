"""Rollups on both real backends: buckets, idempotent upserts, hour merges, windows and trends."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from monitor.alerts.source import RawWindowSource, RollupWindowSource, TieredWindowSource
from monitor.meter import StreamMeasurement
from monitor.results import CheckResult, ProbeResult, percentile
from monitor.store.bucket import RELATIVE_ACCURACY, Histogram, floor_time
from monitor.store.models_rollups import FLEET, HOUR_S, MINUTE_S, ProbeRollupRow
from monitor.store.repo import Store
from monitor.store.rollups import Rollups

T0 = datetime(2026, 11, 20, 9, 58, 0, tzinfo=UTC)


def make_result(
    started_at: datetime,
    *,
    probe: str = "chat",
    target: str = "mock",
    latency_ms: float = 100.0,
    ttft_ms: float | None = 20.0,
    error: bool = False,
    truncated: bool = False,
    failed_check: str | None = None,
    completion_tokens: int = 10,
) -> ProbeResult:
    """A stored-shape ProbeResult without a network: a measurement, or a connect error."""
    base = ProbeResult(probe=probe, target=target, endpoint="chat", stream=True, started_at=started_at, max_tokens=64)
    if error:
        return replace(base, error_kind="connect_error", error_detail="refused", elapsed_ms=latency_ms)
    measurement = StreamMeasurement(
        endpoint="chat", stream=True, text="你好", ttft_ms=ttft_ms, latency_ms=latency_ms, itl_ms=(5.0, 7.0),
        chunk_count=3, content_chunk_count=2, prompt_tokens=8, completion_tokens=completion_tokens,
        tokens_estimated=False, itl_per_token_exact=True, finish_reason="length" if truncated else "stop",
        stop_reason=None, done_seen=True, error_kind=None, error_detail=None,
    )  # fmt: skip
    checks = (CheckResult(failed_check, False, "failed on purpose"),) if failed_check else ()
    return replace(base, measurement=measurement, checks=checks)


@pytest.fixture(name="sessionmaker")
def fix_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def _rollup_rows(sessionmaker: async_sessionmaker[AsyncSession], resolution_s: int) -> list[ProbeRollupRow]:
    query = select(ProbeRollupRow).where(ProbeRollupRow.resolution_s == resolution_s)
    async with sessionmaker() as session:
        rows = (await session.scalars(query.order_by(ProbeRollupRow.bucket_start, ProbeRollupRow.probe))).all()
    return list(rows)


def test_histogram_quantiles_are_within_the_relative_accuracy() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(5, 1) for _ in range(5000)]
    hist = Histogram()
    for value in values:
        hist.add(value)
    assert hist.count == 5000 and hist.min == min(values) and hist.max == max(values)
    for q in (0.5, 0.95, 0.99):
        estimate = hist.quantile(q)
        assert estimate is not None
        # Nearest-rank and interpolated percentiles differ slightly; allow one bucket of slack.
        assert abs(estimate - percentile(values, q * 100)) <= 2.5 * RELATIVE_ACCURACY * percentile(values, q * 100)


def test_histograms_merge_exactly_and_round_trip_through_json() -> None:
    left, right, both = Histogram(), Histogram(), Histogram()
    for i, value in enumerate([0.0, 0.4, 3.0, 17.0, 250.0, 251.0, 9000.0]):
        (left if i % 2 else right).add(value)
        both.add(value)
    left.merge(Histogram.from_json(right.to_json()))
    assert left.to_json() == both.to_json()
    assert Histogram().quantile(0.5) is None and both.quantile(0.0) == 0.0 and both.quantile(1.0) == 9000.0


async def test_rollups_bucket_by_minute_and_hour_and_are_idempotent(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    # 09:58, 09:59 and 10:00: three minutes across an hour boundary, two probes.
    results = [
        make_result(T0 + timedelta(seconds=5), latency_ms=100),
        make_result(T0 + timedelta(seconds=50), latency_ms=300, truncated=True, failed_check="expect.contains"),
        make_result(T0 + timedelta(minutes=1, seconds=1), error=True, latency_ms=5),
        make_result(T0 + timedelta(minutes=2, seconds=30), latency_ms=200, probe="completion"),
    ]
    await Store.from_engine(engine).add_results(results)
    rollups = Rollups(sessionmaker)
    assert await rollups.watermark() is None
    now = T0 + timedelta(minutes=3)
    # Minutes (chat 09:58, chat 09:59, completion 10:00) and the one hour that is over (chat 09, and its fleet row).
    assert await rollups.run(now) == 3 + 1 + 1
    assert [(h.probe, h.bucket_start.hour) for h in await _rollup_rows(sessionmaker, HOUR_S)] == [
        (FLEET, 9),
        ("chat", 9),
    ]
    hourly = await rollups.trend(since=T0 - timedelta(hours=1), until=now, step_s=HOUR_S)
    assert [(p.start.hour, p.results) for p in hourly] == [(9, 3), (10, 1)]  # 10:00 read from minutes

    minutes = await _rollup_rows(sessionmaker, MINUTE_S)
    first = minutes[0]
    assert (first.probe, first.bucket_start, first.results, first.ok_count) == ("chat", T0, 2, 1)
    assert (first.errors, first.truncated, first.check_failures) == (0, 1, {"expect.contains": 1})
    assert first.metrics["latency_ms"]["n"] == 2 and first.metrics["latency_ms"]["s"] == 400.0
    assert (minutes[1].errors, minutes[1].metrics) == (1, {})

    # Two hours later both hours are over: each is written per probe plus one fleet row.
    later = T0 + timedelta(hours=2)
    assert await rollups.run(later) == 3 + 2 * 2
    hours = await _rollup_rows(sessionmaker, HOUR_S)
    assert [(h.probe, h.bucket_start.hour, h.results) for h in hours] == [
        (FLEET, 9, 3), ("chat", 9, 3), (FLEET, 10, 1), ("completion", 10, 1),
    ]  # fmt: skip
    assert hours[1].metrics["latency_ms"]["n"] == 2  # the error has no latency in the distributions
    # A fleet row is exactly the merge of that hour's probe rows.
    fleet, chat = hours[0], hours[1]
    assert (fleet.metrics, fleet.errors, fleet.truncated, fleet.check_failures) == (
        chat.metrics, chat.errors, chat.truncated, chat.check_failures,
    )  # fmt: skip
    assert await rollups.trend(since=T0 - timedelta(hours=1), until=later, step_s=HOUR_S) == hourly

    before = [(r.bucket_start, r.probe, r.results, r.metrics) for r in minutes + hours]
    assert await rollups.run(later) == 3 + 2 * 2  # the settle window's minutes and their hours, again
    await rollups.rollup_range(T0 - timedelta(hours=1), later)
    after = [(r.bucket_start, r.probe, r.results, r.metrics) for r in
             await _rollup_rows(sessionmaker, MINUTE_S) + await _rollup_rows(sessionmaker, HOUR_S)]  # fmt: skip
    assert after == before
    assert await rollups.watermark() == T0 + timedelta(minutes=2)


async def test_late_results_are_picked_up_by_the_next_run(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    store = Store.from_engine(engine)
    rollups = Rollups(sessionmaker, settle_s=120)
    await store.add_results([make_result(T0)])
    await rollups.run(T0 + timedelta(seconds=30))
    # A slow request that started at T0 is stored a minute later, after another result.
    await store.add_results([make_result(T0 + timedelta(seconds=61)), make_result(T0 + timedelta(seconds=1))])
    await rollups.run(T0 + timedelta(seconds=90))
    minutes = await _rollup_rows(sessionmaker, MINUTE_S)
    assert [m.results for m in minutes] == [2, 1]


async def test_window_and_trend_read_rollups(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    results = []
    # Every 10 minutes for 3 hours; latency grows by hour, one error per hour.
    for i in range(18):
        at = start + timedelta(minutes=10 * i, seconds=3)
        results.append(make_result(at, latency_ms=100.0 * (1 + i // 6), error=i % 6 == 5))
    await Store.from_engine(engine).add_results(results)
    rollups = Rollups(sessionmaker)
    await rollups.run(start + timedelta(hours=3))

    total = await rollups.window(since=start, until=start + timedelta(hours=3), probe="chat")
    assert (total.results, total.errors) == (18, 3)
    # A ragged window: 00:30-02:20 is minutes + one whole hour + minutes.
    ragged = await rollups.window(since=start + timedelta(minutes=30), until=start + timedelta(hours=2, minutes=20))
    assert ragged.results == 11
    assert (await rollups.window(since=start, until=start + timedelta(hours=3), probe="other")).results == 0

    hourly = await rollups.trend(since=start, until=start + timedelta(hours=3), step_s=HOUR_S, probe="chat")
    assert [p.results for p in hourly] == [6, 6, 6]
    assert [p.rates["error_rate"] for p in hourly] == [1 / 6] * 3
    p50s = [p.metrics["latency_ms"].p50 or 0.0 for p in hourly]
    assert p50s == sorted(p50s) and p50s[0] == pytest.approx(100, rel=RELATIVE_ACCURACY)
    by_half_hour = await rollups.trend(since=start, until=start + timedelta(hours=1), step_s=1800)
    assert [p.results for p in by_half_hour] == [3, 3]
    assert hourly[0].to_json()["metrics"]["latency_ms"]["count"] == 5
    with pytest.raises(ValueError, match="multiple of 60"):
        await rollups.trend(since=start, until=start, step_s=90)


def test_floor_time_is_epoch_aligned() -> None:
    at = datetime(2026, 11, 20, 10, 17, 42, 500, tzinfo=UTC)
    assert floor_time(at, MINUTE_S) == datetime(2026, 11, 20, 10, 17, tzinfo=UTC)
    assert floor_time(at, HOUR_S) == datetime(2026, 11, 20, 10, tzinfo=UTC)


async def test_rollup_source_agrees_with_the_raw_source(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    rng = random.Random(3)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    now = start + timedelta(hours=5)
    results = []
    for i in range(300):
        at = start + timedelta(seconds=60 * i + rng.random())
        results.append(
            make_result(at, latency_ms=rng.lognormvariate(5, 0.5), error=i % 10 == 0, truncated=i % 7 == 0,
                        failed_check="expect.regex" if i % 5 == 0 else None)
        )  # fmt: skip
    await Store.from_engine(engine).add_results(results)
    rollups = Rollups(sessionmaker, settle_s=180)
    # The rollup job ran a while ago: the last half hour is only in raw rows.
    await rollups.run(now - timedelta(minutes=30))
    raw = RawWindowSource(sessionmaker)
    tiered = TieredWindowSource(raw, RollupWindowSource(rollups), raw_max_s=3600)
    since = start + timedelta(minutes=10)
    for metric, agg, check in (
        ("error_rate", "rate", None), ("truncation_rate", "rate", None),
        ("check_failure_rate", "rate", "expect.regex"), ("latency_ms", "mean", None), ("latency_ms", "max", None),
        ("latency_ms", "p95", None), ("completion_tokens", "min", None),
    ):  # fmt: skip
        want = await raw.aggregate(metric=metric, agg=agg, probe="chat", since=since, until=now, check=check)
        got = await tiered.aggregate(metric=metric, agg=agg, probe="chat", since=since, until=now, check=check)
        assert got.count == want.count, metric
        assert want.value is not None and got.value is not None
        tolerance = RELATIVE_ACCURACY * 1.5 if agg.startswith("p") else 1e-9
        assert got.value == pytest.approx(want.value, rel=tolerance), (metric, agg)
    # Short windows go to the raw source unchanged.
    short = await tiered.aggregate(metric="latency_ms", agg="p50", probe="chat", since=now - timedelta(minutes=9),
                                   until=now)  # fmt: skip
    assert short == await raw.aggregate(metric="latency_ms", agg="p50", probe="chat",
                                        since=now - timedelta(minutes=9), until=now)  # fmt: skip
    empty = await tiered.aggregate(metric="ttft_ms", agg="p95", probe="none", since=start, until=now)
    assert (empty.value, empty.count) == (None, 0)


async def test_fleet_trend_reads_fleet_rows_and_equals_the_merge_of_every_probe(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    results = [
        make_result(T0 + timedelta(minutes=m, seconds=3), latency_ms=100 + 10 * m, probe=probe)
        for m in range(0, 150, 7)
        for probe in ("chat", "completion", "other")
    ]
    await Store.from_engine(engine).add_results(results)
    rollups = Rollups(sessionmaker)
    later = T0 + timedelta(hours=3)
    await rollups.run(later)
    fleet = await rollups.trend(since=T0 - timedelta(hours=1), until=later, step_s=HOUR_S)
    per_probe: dict[datetime, list[int]] = {}
    for probe in ("chat", "completion", "other"):
        for point in await rollups.trend(since=T0 - timedelta(hours=1), until=later, step_s=HOUR_S, probe=probe):
            per_probe.setdefault(point.start, []).append(point.results)
    assert [(p.start, p.results) for p in fleet] == [(start, sum(n)) for start, n in sorted(per_probe.items())]
    assert sum(p.results for p in fleet) == len(results)
    # Fleet rows never show up as a probe of their own.
    window = await rollups.window(since=T0 - timedelta(hours=1), until=later)
    assert window.results == len(results)
