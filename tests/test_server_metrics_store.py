"""ServerMetricsStore on both real backends: rows in, points, per-step summaries, latest, retention deletes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.server_metrics import ServerInterval
from monitor.store.server_metrics_repo import ServerMetricsStore

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


async def test_rows_points_steps_latest_and_deletes(engine: AsyncEngine) -> None:
    store = ServerMetricsStore.from_engine(engine)
    # Two minutes of 15 s scrapes; queue depth i, KV-cache usage i / 10; one failed scrape in between.
    for i in range(8):
        at = T0 + timedelta(seconds=15 * i)
        values = ServerInterval(requests_waiting=float(i), kv_cache_usage_ratio=i / 10)
        await store.add("vllm", at, values=values, interval_s=15.0, sources={"requests_waiting": "vllm:x"})
    await store.add("vllm", T0 + timedelta(seconds=50), values=None, error="the server serves no /metrics")
    await store.add("other", T0, values=ServerInterval(requests_waiting=9.0))

    points = await store.points("vllm", since=T0, until=T0 + timedelta(minutes=5))
    assert [p.values["requests_waiting"] for p in points if p.error is None] == [float(i) for i in range(8)]
    assert points[0].sources == {"requests_waiting": "vllm:x"} and points[0].values["preemptions"] is None
    assert [p.error for p in points].count("the server serves no /metrics") == 1

    steps = await store.steps("vllm", since=T0, until=T0 + timedelta(minutes=5), step_s=60)
    assert [s.start for s in steps] == [T0, T0 + timedelta(minutes=1)]
    assert [s.scrapes for s in steps] == [4, 4]  # the failed scrape is not a step's value
    assert steps[0].mean["requests_waiting"] == 1.5 and steps[0].max["requests_waiting"] == 3.0
    assert steps[1].max["kv_cache_usage_ratio"] == 0.7 and steps[1].mean["server_ttft_ms_p95"] is None

    assert await store.values("requests_waiting", "vllm", since=T0, until=T0 + timedelta(seconds=30)) == [0.0, 1.0]
    latest = await store.latest(["vllm", "other", "never"])
    assert set(latest) == {"vllm", "other"} and latest["other"].values["requests_waiting"] == 9.0

    assert await store.delete_before(T0 + timedelta(seconds=30), limit=100) == 3  # two of vllm, one of other
    assert len(await store.points("vllm", since=T0)) == 7
