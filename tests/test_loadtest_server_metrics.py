"""The server's own /metrics in every load run: scraped each second, stored, joined to the series, reported.

The mock serves vLLM's exposition (queue depth, running requests, a KV-cache estimate, token
counters, TTFT/ITL/E2E histograms); its `openai` flavour serves no /metrics, like a hosted API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from monitor.config import parse_settings
from monitor.loadtest.repo import LoadStore, SeriesPoint
from monitor.loadtest.server_values import ServerSeconds, second_of
from monitor.loadtest.slo import parse_slo
from monitor.server_metrics import ServerInterval, interval, parse_exposition
from monitor.store import create_engine, ensure_schema
from monitor.store.server_metrics_load import load_run_points
from monitor.store.server_metrics_repo import ServerMetricsStore
from tests.dashboard_data import dashboard_app
from tests.mockserver import REPO_ROOT, MockProcess

pytestmark = pytest.mark.load

ITL_MS = 20.0  # replies long enough that every scrape sees requests running


def _loadtest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", "loadtest", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip


@pytest.fixture(name="sqlite_engine")
async def fix_sqlite_engine(sqlite_db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(sqlite_db_url)
    try:
        await ensure_schema(engine)
        yield engine
    finally:
        await engine.dispose()


async def test_a_run_stores_the_servers_metrics_per_second_and_reports_them(
    mock: MockProcess, tmp_path: Path, sqlite_db_url: str, sqlite_engine: AsyncEngine, aiohttp_client: AiohttpClient
) -> None:
    mock.configure(itl_ms=ITL_MS)
    html = tmp_path / "report.html"
    slo = "server_running_max>=1,server_queue_max<=10,server_kv_cache_usage_max<=0.9,error_rate<=0"
    proc = _loadtest(
        "--base-url", mock.base_url, "--db", sqlite_db_url, "--users", "4", "--duration", "4s",
        "--max-tokens", "32", "--slo", slo, "--json", "--html", str(html),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    server = doc["summary"]["server"]
    assert server["status"] == "measured" and server["failures"] == 0, server
    assert server["url"] == mock.base_url.removesuffix("/v1") + "/metrics"
    assert "vllm:num_requests_waiting" in server["source"] and "vllm:kv_cache_usage_perc" in server["source"]
    m = server["metrics"]
    assert m["server_queue_max"] == 0 and 1 <= m["server_running_max"] <= 4, m
    assert 0 < m["server_kv_cache_usage_max"] < 0.9 and m["server_generation_tokens_per_s"] > 0, m
    assert m["server_ttft_p95_ms"] is not None and m["server_itl_p95_ms"] is not None, m
    # The mock does not expose preemptions or a prefix cache: not measured, never a made-up 0.
    assert m["server_preemptions"] is None and m["server_prefix_cache_hit_rate"] is None
    assert {r["metric"]: (r["passed"], r["value"]) for r in doc["slo"]}["server_running_max"] == (
        True, m["server_running_max"],
    )  # fmt: skip

    # One stored row per scrape, with the run's id; the series carries them by second.
    points = await load_run_points(async_sessionmaker(sqlite_engine, expire_on_commit=False), doc["run_id"])
    assert len(points) == server["scrapes"] >= 3 and all(p.error is None for p in points)
    assert points[0].sources["requests_waiting"] == "vllm:num_requests_waiting"
    scraped = [s for s in doc["series"] if s["server"] is not None]
    assert len(scraped) >= 2, doc["series"]
    # Aligned by second: the server generated about what the client received in the same second.
    busy = [s for s in scraped if s["output_tokens"] and s["server"]["generation_tokens_per_s"]]
    assert busy and any(0.5 <= s["server"]["generation_tokens_per_s"] / s["output_tokens"] <= 2 for s in busy)
    stored = await LoadStore.from_engine(sqlite_engine).series(doc["run_id"])
    assert [p.to_json() for p in stored if p.server is not None] == scraped

    page = html.read_text(encoding="utf-8")
    for title in ("Server (its own /metrics)", "Server queue", "Server KV-cache usage", "TTFT p95: server vs client",
                  "<td>server_queue_max</td>"):  # fmt: skip
        assert title in page, title
    assert page.count("<svg width") == 6 + 4 + 1  # the client's charts, the server's, the read lag
    assert page.count('class="chart bars"') == 2  # input and output token lengths
    assert "Server prefix-cache hit rate: not exposed by the server" in page

    settings = parse_settings({"targets": [{"name": "mock", "base_url": mock.base_url}]})
    client = await aiohttp_client(dashboard_app(settings, sqlite_engine))
    body = await (await client.get(f"/loadruns/{doc['run_id']}")).text()
    assert "Server queue" in body and "TTFT p95: server vs client" in body and "vllm:num_requests_running" in body
    api = await (await client.get(f"/api/v1/loadruns/{doc['run_id']}")).json()
    assert [s for s in api["series"] if s["server"] is not None] == scraped


async def test_a_server_without_metrics_costs_one_request_and_the_report_says_so(
    mock: MockProcess, sqlite_db_url: str, sqlite_engine: AsyncEngine
) -> None:
    mock.configure(flavor="openai")
    proc = _loadtest("--base-url", mock.base_url, "--db", sqlite_db_url, "--users", "2", "--duration", "3s")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "server metrics: not exposed: the server serves no /metrics (HTTP 404)" in proc.stdout
    store = LoadStore.from_engine(sqlite_engine)
    (run,) = await store.runs(1)
    assert run.summary is not None and run.status == "completed"
    assert run.summary["server"]["status"] == "not exposed" and run.summary["server"]["scrapes"] == 1
    assert await load_run_points(async_sessionmaker(sqlite_engine), run.id) == []
    assert all(p.server is None for p in await store.series(run.id))


async def test_an_objective_on_an_unexposed_server_metric_fails_and_off_means_not_scraped(
    mock: MockProcess, sqlite_db_url: str, sqlite_engine: AsyncEngine
) -> None:
    proc = _loadtest(
        "--base-url", mock.base_url, "--db", sqlite_db_url, "--users", "1", "--duration", "2s",
        "--slo", "server_preemptions<=0", "--json",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    (result,) = json.loads(proc.stdout)["slo"]
    assert result == {"metric": "server_preemptions", "op": "<=", "threshold": 0, "value": None, "passed": False}
    proc = _loadtest("--base-url", mock.base_url, "--db", sqlite_db_url, "--users", "1", "--duration", "2s",
                     "--no-server-metrics", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["summary"]["server"]["status"] == "off" and doc["params"]["server_metrics"] is False
    assert await load_run_points(async_sessionmaker(sqlite_engine), doc["run_id"]) == []


def test_a_sweep_judges_each_step_on_the_servers_metrics_too(mock: MockProcess, sqlite_db_url: str) -> None:
    proc = _loadtest(
        "--base-url", mock.base_url, "--db", sqlite_db_url, "--endpoint", "chat", "--rate", "2", "--sweep",
        "--sweep-steps", "2", "--duration", "3s", "--slo", "server_queue_max<=10,server_running_max>=0", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = json.loads(proc.stdout)["summary"]["sweep"]["steps"]
    assert len(steps) == 2 and all(s["passed"] for s in steps), steps
    assert all(r["value"] is not None for s in steps for r in s["slo"]), steps


async def test_a_runs_stored_seconds_carry_its_scrapes_on_both_backends(engine: AsyncEngine) -> None:
    """`LoadStore.series` joins the run's `server_metrics` rows by second; the daemon's rows stay out."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    loads, scrapes = LoadStore(sessions), ServerMetricsStore(sessions)
    t0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    run_id = await loads.create_run(started_at=t0, target="m", base_url="http://127.0.0.1:1/v1", model=None,
                                    params={}, baseline_id=None)  # fmt: skip
    await loads.save_series(run_id, [_second(t0, 0), _second(t0, 1), _second(t0, 2)])
    waiting = {0: 3.0, 1: 5.0}
    for t_s, value in waiting.items():  # each taken just after its second ends
        at = t0 + timedelta(seconds=t_s + 1, milliseconds=50)
        await scrapes.add("m", at, values=ServerInterval(requests_waiting=value), interval_s=1.0,
                          sources={"requests_waiting": "vllm:num_requests_waiting"}, load_run_id=run_id)  # fmt: skip
    await scrapes.add("m", t0 + timedelta(seconds=3, milliseconds=50), values=ServerInterval(requests_waiting=99.0))
    series = await loads.series(run_id)
    assert [None if p.server is None else p.server["requests_waiting"] for p in series] == [3.0, 5.0, None]
    assert [p.sources for p in await load_run_points(sessions, run_id)] == [
        {"requests_waiting": "vllm:num_requests_waiting"}] * 2  # fmt: skip


def _second(t0: datetime, t_s: int) -> SeriesPoint:
    return SeriesPoint(
        t_s=t_s, ts=t0 + timedelta(seconds=t_s), users=1, requests=1, failures=0, sent=0, output_tokens=8,
        truncated=0, ttft_p50_ms=1.0, ttft_p95_ms=1.0, itl_p50_ms=None, itl_p95_ms=None, e2e_p50_ms=2.0,
        e2e_p95_ms=2.0, lag_p95_ms=None, errors={},
    )  # fmt: skip


def test_server_objectives_parse() -> None:
    objectives = parse_slo("server_queue_max<=10,server_kv_cache_usage_max<=0.9,server_prefix_cache_hit_rate>=50%")
    assert [(o.metric, o.threshold) for o in objectives] == [
        ("server_queue_max", 10), ("server_kv_cache_usage_max", 0.9), ("server_prefix_cache_hit_rate", 0.5),
    ]  # fmt: skip


_EXPOSITION = """\
vllm:num_requests_waiting {waiting}
vllm:kv_cache_usage_perc {kv}
vllm:num_preemptions_total {preempted}
vllm:generation_tokens_total {tokens}
"""


def test_a_span_takes_the_gauges_maximum_and_the_counters_difference() -> None:
    seconds = ServerSeconds()
    previous = None
    for t, (waiting, kv, preempted, tokens) in enumerate([(0, 0.1, 5, 100), (7, 0.95, 6, 300), (2, 0.4, 9, 700)]):
        at = datetime.fromtimestamp(1_000 + t + 0.05, UTC)
        sample = parse_exposition(_EXPOSITION.format(waiting=waiting, kv=kv, preempted=preempted, tokens=tokens))
        seconds.add(at, sample, interval(previous, sample, 1.0))
        previous = sample
    assert second_of(datetime.fromtimestamp(1_000.05, UTC)) == 999
    values = seconds.values()
    assert values["server_queue_max"] == 7 and values["server_kv_cache_usage_max"] == 0.95
    assert values["server_preemptions"] == 4 and values["server_generation_tokens_per_s"] == pytest.approx(300)
    assert seconds.values(999, 1001)["server_preemptions"] == 1  # the first two seconds only
    assert seconds.values(2_000)["server_queue_max"] is None  # nothing scraped then
    assert seconds.point(1_000) == seconds.intervals[1_000].to_json() and seconds.point(5) is None
