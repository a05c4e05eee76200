"""One metric catalogue and one trend reader: the API, the probe page and the alert windows agree.

The same stored results, part of them rolled up into hours and minutes and the newest only raw,
are read through `/api/v1/trend`, the probe page's JSON and HTML, the overview and the three
alert window sources, on both real backends; every reader must give the same steps and the same
error rate, which the test also counts itself from the results it stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from monitor.alerts.source import (
    RawWindowSource,
    RollupWindowSource,
    TieredWindowSource,
    WindowSource,
    bucket_aggregate,
)
from monitor.config import RATE_METRICS, ProbeSettings, Settings, load_settings, parse_settings
from monitor.dashboard.fmt import fmt_pct
from monitor.dashboard.queries import WINDOWS
from monitor.errors import ConfigError
from monitor.metric_catalog import DISTRIBUTIONS, METRIC_NAMES, METRICS, RATES, MetricDef
from monitor.results import ProbeResult
from monitor.store.bucket import RESULT_COLUMNS, Bucket
from monitor.store.models_rollups import HOUR_S, MINUTE_S, ProbeRollupRow
from monitor.store.repo import Store
from monitor.store.rollups import Rollups
from monitor.store.trend import RAW_TAIL_MAX_S, Segment, TrendReader, TrendStep, ceil_time, plan
from tests.dashboard_data import dashboard_app, result

Client = TestClient[web.Request, web.Application]


def _settings(tmp_path: Path) -> Settings:
    raw: dict[str, Any] = {
        "targets": [{"name": "glm4", "base_url": "http://127.0.0.1:8000/v1"}],
        "probes": [
            {"name": "chat", "target": "glm4", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 512},
        ],
    }
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return load_settings(path)


@dataclass(frozen=True, slots=True)
class Stored:
    """What the test stored, to count from: when, and whether the request failed."""

    started_at: datetime
    error: bool

    @staticmethod
    def count(stored: list[Stored], since: datetime, until: datetime) -> tuple[int, int]:
        inside = [s for s in stored if since <= s.started_at < until]
        return len(inside), sum(s.error for s in inside)


def _history(probe: ProbeSettings, now: datetime) -> tuple[list[ProbeResult], list[Stored]]:
    """Every 20 minutes for 8 days, then every minute for the last 2 hours; some errors, some cut replies.

    Values are whole numbers (two tokens: the one inter-token gap is latency - TTFT), so histogram
    sums are exact whatever order buckets merge in, and two readers' means can be compared exactly.
    """
    ages_s = sorted({20 * 60 * i + 17 for i in range(8 * 72)} | {60 * i + 17 for i in range(120)}, reverse=True)
    results, stored = [], []
    for i, age_s in enumerate(ages_s):
        at = now - timedelta(seconds=age_s)
        if i % 9 == 0:
            results.append(result(probe, at, error="refused"))
        else:
            results.append(
                result(probe, at, latency_ms=100.0 + 4 * (i % 50), ttft_ms=40.0, tokens=2,
                       finish_reason="length" if i % 7 == 0 else "stop")
            )  # fmt: skip
        stored.append(Stored(at, i % 9 == 0))
    return results, stored


@pytest.fixture(name="seeded")
async def fix_seeded(
    aiohttp_client: AiohttpClient, engine: AsyncEngine, tmp_path: Path
) -> tuple[Client, Rollups, list[Stored]]:
    """The app over 8 days of history: rolled up until 30 minutes ago, the rest only raw."""
    settings = _settings(tmp_path)
    now = datetime.now(UTC)
    results, stored = _history(settings.probes[0], now)
    await Store.from_engine(engine).add_results(results)
    rollups = Rollups(async_sessionmaker(engine, expire_on_commit=False))
    await rollups.run(now - timedelta(minutes=30))
    client = await aiohttp_client(dashboard_app(settings, engine, rollups=rollups))
    return client, rollups, stored


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_api_trend_and_probe_page_agree_across_raw_minute_and_hour_rows(
    seeded: tuple[Client, Rollups, list[Stored]], engine: AsyncEngine
) -> None:
    client, rollups, stored = seeded
    mark = await rollups.watermark()
    assert mark is not None
    async with async_sessionmaker(engine)() as session:
        hours = (await session.execute(select(func.count()).where(ProbeRollupRow.resolution_s == HOUR_S))).scalar_one()
    assert hours > 0, "the 7 d window must read hour rows"
    assert any(s.started_at > mark for s in stored), "the newest results must be raw only"
    for window in WINDOWS:
        page = await (await client.get("/api/v1/probes/glm4/chat", params={"window": window})).json()
        since, until, step_s = _time(page["since"]), _time(page["until"]), page["step_s"]
        params = {"probe": "chat", "target": "glm4", "since": since.isoformat(), "step_s": str(step_s)}
        resp = await client.get("/api/v1/trend", params=params)
        assert resp.status == 200, await resp.text()
        api = await resp.json()
        assert api == page["steps"], window
        # And both are what was stored: every step's count and error rate, exactly.
        for step in api:
            start = _time(step["start"])
            results, errors = Stored.count(stored, start, min(start + timedelta(seconds=step_s), until))
            assert (step["results"], step["errors"]) == (results, errors), (window, step["start"])
            assert step["error_rate"] == errors / results
        assert sum(s["results"] for s in api) == Stored.count(stored, since, until)[0] == page["totals"]["results"]


async def test_error_rate_is_the_same_number_everywhere(
    seeded: tuple[Client, Rollups, list[Stored]], engine: AsyncEngine
) -> None:
    client, rollups, stored = seeded
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    page = await (await client.get("/api/v1/probes/glm4/chat", params={"window": "24h"})).json()
    since, until = _time(page["since"]), _time(page["until"])
    results, errors = Stored.count(stored, since, until)
    expected = errors / results
    assert 0 < expected < 1

    assert page["totals"]["error_rate"] == expected
    html = await (await client.get("/probes/glm4/chat", params={"window": "24h"})).text()
    assert f'<div class="stat-label">Error rate</div><div class="stat-value">{fmt_pct(expected)}</div>' in html
    # The API over the same span as one step (it starts on a day boundary only if the page's does: use hours).
    steps = await (
        await client.get("/api/v1/trend", params={"probe": "chat", "since": since.isoformat(), "step_s": "3600"})
    ).json()
    assert sum(s["errors"] for s in steps) / sum(s["results"] for s in steps) == expected

    assert (await rollups.window(probe="chat", since=since, until=until)).rate("error_rate") == expected
    raw = RawWindowSource(sessionmaker)
    long = RollupWindowSource(rollups)
    sources: dict[str, WindowSource] = {"raw": raw, "rollups": long, "tiered": TieredWindowSource(raw, long)}
    for name, source in sources.items():
        agg = await source.aggregate(metric="error_rate", agg="rate", probe="chat", since=since, until=until)
        assert (agg.value, agg.count) == (expected, results), name

    overview = await (await client.get("/api/v1/overview")).json()
    now = _time(overview["generated_at"])
    row = overview["rows"][0]
    for span, start in (("hour", now - timedelta(hours=1)), ("day", now - timedelta(days=1))):
        start = ceil_time(start, HOUR_S) if span == "day" else start.replace(second=0, microsecond=0)
        n, bad = Stored.count(stored, start, now)
        assert (row[span]["results"], row[span]["error_rate"]) == (n, bad / n), span


async def test_the_probe_page_counts_check_failures_like_the_rollups(
    seeded: tuple[Client, Rollups, list[Stored]],
) -> None:
    """The page's old reader dropped check failures; steps now carry them wherever they are read from."""
    client, rollups, _ = seeded
    page = await (await client.get("/api/v1/probes/glm4/chat", params={"window": "7d"})).json()
    failing = [s for s in page["steps"] if s["check_failure_rate"]]
    assert failing and all("truncated" in s["check_failure_rate"] for s in failing)
    since, until = _time(page["since"]), _time(page["until"])
    window = await rollups.window(since=since, until=until, probe="chat")
    assert window.hits("check_failure_rate", "truncated") == window.hits("truncation_rate") > 0


# --- the planner ----------------------------------------------------------------------------------------------


def test_plan_splits_at_the_settle_time_and_reads_only_written_hours() -> None:
    now = datetime(2026, 11, 25, 12, 34, 56, tzinfo=UTC)
    mark = datetime(2026, 11, 25, 12, 33, tzinfo=UTC)
    # Minutes the rollup job may still revise come from raw rows.
    segments, raw_from = plan(now - timedelta(hours=1), now, mark, hours=False, settle_s=180)
    assert raw_from == datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
    assert segments == [Segment(MINUTE_S, datetime(2026, 11, 25, 11, 34, tzinfo=UTC), raw_from)]
    # Hour rows end where the newest written one ends; the hours after come from minutes.
    hours_end = datetime(2026, 11, 25, 9, tzinfo=UTC)
    segments, _ = plan(now - timedelta(hours=24), now, mark, hours=True, hours_end=hours_end)
    assert [(s.resolution_s, s.end) for s in segments] == [
        (MINUTE_S, datetime(2026, 11, 24, 13, tzinfo=UTC)), (HOUR_S, hours_end), (MINUTE_S, mark),
    ]  # fmt: skip
    # No hour rows at all: minutes only.
    segments, _ = plan(now - timedelta(hours=24), now, mark, hours=True, hours_end=now - timedelta(hours=24))
    assert [s.resolution_s for s in segments] == [MINUTE_S]
    # A span that ended before the watermark: rollups up to its last minute, raw rows for that minute only.
    until = datetime(2026, 11, 25, 10, 0, 30, tzinfo=UTC)
    segments, raw_from = plan(until - timedelta(minutes=10), until, mark, hours=False, settle_s=180)
    assert raw_from == datetime(2026, 11, 25, 10, tzinfo=UTC) and segments[-1].end == raw_from
    # Rollups lagging more than the raw tail allows: a gap, not a scan of the whole span.
    _, raw_from = plan(now - timedelta(days=7), now, now - timedelta(days=2), hours=True)
    assert (now - raw_from).total_seconds() < RAW_TAIL_MAX_S + MINUTE_S


async def test_a_step_that_is_not_a_multiple_of_a_minute_is_refused(engine: AsyncEngine) -> None:
    reader = TrendReader(async_sessionmaker(engine))
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="multiple of 60"):
        await reader.trend(since=now - timedelta(hours=1), until=now, step_s=90)


# --- the catalogue and the buckets ----------------------------------------------------------------------------


def test_the_config_validates_rule_metrics_against_the_catalogue() -> None:
    base: dict[str, Any] = {
        "targets": [{"name": "m", "base_url": "http://127.0.0.1:1/v1"}],
        "probes": [{"name": "p", "target": "m", "messages": [{"role": "user", "content": "x"}]}],
    }
    rule: dict[str, Any] = {"name": "r", "kind": "threshold", "window": "5m", "op": ">", "value": 1}
    for m in METRICS:
        extra = {"check": "truncated"} if m.per_check else {}
        settings = parse_settings({**base, "rules": [{**rule, "metric": m.name, **extra}]})
        assert settings.rules[0].effective_agg == ("rate" if m.kind == "rate" else "mean")
    with pytest.raises(ConfigError) as caught:
        parse_settings({**base, "rules": [{**rule, "metric": "vibes"}]})
    listed = ", ".join(repr(n) for n in METRIC_NAMES[:-1]) + f" or {METRIC_NAMES[-1]!r}"
    assert str(caught.value) == f"rules[0].metric: must be one of {listed}"
    assert RATE_METRICS == RATES == {m.name for m in METRICS if m.kind == "rate"}


def test_a_rate_needs_a_count_column() -> None:
    with pytest.raises(ValueError, match="a rate needs a count column"):
        MetricDef("quality_rate", "rate", "ratio", "quality_failed", "share of answers judged poor")
    with pytest.raises(ValueError, match="a distribution has none"):
        MetricDef("ttfa_ms", "distribution", "ms", "ttfa_ms", "time to first answer token", count="ttfa")


def _columns(**values: Any) -> dict[str, Any]:
    return {**dict.fromkeys(RESULT_COLUMNS), "truncated": False, "failed_checks": "", **values}


def test_bucket_rates_are_derived_once_and_merge_exactly() -> None:
    left, right = Bucket(), Bucket()
    left.add(True, _columns(latency_ms=100.0, ttft_ms=20.0))
    left.add(False, _columns(error_kind="connect_error"))
    right.add(False, _columns(latency_ms=300.0, truncated=True, failed_checks="truncated,expect.regex"))
    right.add(True, _columns(latency_ms=200.0))
    both = Bucket.merged([left, right])
    assert (both.results, both.ok_count, both.errors, both.answered) == (4, 2, 1, 3)
    assert both.rate("error_rate") == 1 / 4 and both.rate("truncation_rate") == 1 / 3
    assert both.rate("check_failure_rate", "expect.regex") == 1 / 3
    assert both.count("latency_ms") == 3 and both.summary("ttft_ms").count == 1
    stored = Bucket()
    values = both.to_values()
    stored.merge_stored(values["results"], values["ok_count"], [values["errors"], values["truncated"]],
                        values["check_failures"], values["metrics"])  # fmt: skip
    assert stored.to_values() == values
    assert bucket_aggregate(both, metric="error_rate", agg="rate").value == both.rate("error_rate")
    with pytest.raises(ValueError, match="needs the check's name"):
        both.rate("check_failure_rate")
    with pytest.raises(ValueError, match="not a rate"):
        both.rate("latency_ms")


def test_a_trend_step_has_one_json_shape() -> None:
    bucket = Bucket()
    bucket.add(True, _columns(latency_ms=100.0))
    step = TrendStep.of(datetime(2026, 11, 25, 12, tzinfo=UTC), bucket).to_json()
    assert list(step) == [
        "start", "results", "ok", "errors", "truncated", "error_rate", "truncation_rate", "check_failure_rate",
        "metrics",
    ]  # fmt: skip
    assert step["start"] == "2026-11-25T12:00:00+00:00" and list(step["metrics"]) == list(DISTRIBUTIONS)
    assert step["metrics"]["latency_ms"] == {"count": 1, "mean": 100.0, "p50": 100.0, "p95": 100.0, "p99": 100.0,
                                             "max": 100.0}  # fmt: skip
    assert step["metrics"]["ttft_ms"]["count"] == 0 and step["error_rate"] == 0.0
