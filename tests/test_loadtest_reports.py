"""The reports of a run's workload, goodput and the generator's own error: printed, HTML and the dashboard page.

One real run against the mock (with --goodput and --html) is read back from its database and
rendered all three ways; summaries built from the documented shapes check what a run with
sessions, a sweep knee and a refused verdict shows, and that a run stored before these keys
existed still renders, with those sections left out.
"""

from __future__ import annotations

import copy
import io
import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.config import parse_settings
from monitor.dashboard.pages_load import load_run_body
from monitor.dashboard.queries_load import LoadRunDetail
from monitor.loadtest import report
from monitor.loadtest.html import render_html
from monitor.loadtest.repo import LoadRun, LoadStore, SeriesPoint
from monitor.loadtest.runner import RunOutcome
from monitor.loadtest.summary import print_outcome
from tests.dashboard_data import dashboard_app
from tests.mockserver import MockProcess

# The run helper and the SQLite engine fixture of the server-metrics tests (the same CLI, the same database).
from tests.test_loadtest_server_metrics import _loadtest, fix_sqlite_engine  # noqa: F401

pytestmark = pytest.mark.load

NEW_KEYS = ("turns", "lengths", "workload", "tokens_estimated")
_BAR = re.compile(r'<rect class="bar b(\d)"[^>]*><title>([^<]*): ([\d.,]+) [^<]*</title>')
TRUST = "How far to trust these numbers"


def _bars(page: str, title: str) -> list[tuple[int, str, float]]:
    """(series, label, value) of each bar of the bar chart titled `title`."""
    start = page.index(f'aria-label="{title}"')
    chart = page[start : page.index("</svg>", start)]
    return [(int(s), label, float(v.replace(",", ""))) for s, label, v in _BAR.findall(chart)]


def _outcome(run: LoadRun, series: list[SeriesPoint]) -> RunOutcome:
    return RunOutcome(
        run_id=run.id, status=run.status, verdict=run.verdict, params=run.params, summary=run.summary or {},
        slo=(), series=series, baseline=None, started_at=run.started_at, ended_at=run.ended_at or run.started_at,
    )  # fmt: skip


def _printed(outcome: RunOutcome) -> str:
    console = Console(file=io.StringIO(), width=80)
    print_outcome(console, outcome)
    text: str = console.file.getvalue()  # type: ignore[attr-defined]
    assert all(len(line) <= 80 for line in text.splitlines()), text
    return text


def _page(run: LoadRun, series: list[SeriesPoint]) -> str:
    detail = LoadRunDetail(run=run, series=series, canaries=[], baseline=None, baseline_series=[], comparison=[],
                           others=[])  # fmt: skip
    return str(load_run_body(detail))


@pytest.fixture(name="real_run")
async def fix_real_run(
    mock: MockProcess, tmp_path: Path, sqlite_db_url: str, sqlite_engine: AsyncEngine
) -> tuple[dict[str, Any], LoadRun, list[SeriesPoint], str]:
    """One short run with --goodput and --html: its JSON document, stored run, stored series and HTML page."""
    html = tmp_path / "report.html"
    proc = _loadtest("--base-url", mock.base_url, "--db", sqlite_db_url, "--users", "2", "--duration", "3s",
                     "--max-tokens", "16", "--goodput", "ttft_ms<=60000", "--json", "--html", str(html))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    store = LoadStore.from_engine(sqlite_engine)
    run = await store.get_run(doc["run_id"])
    assert run is not None and run.summary is not None
    return doc, run, await store.series(run.id), html.read_text(encoding="utf-8")


async def test_a_real_run_reports_lengths_goodput_and_the_generators_error_everywhere(
    real_run: tuple[dict[str, Any], LoadRun, list[SeriesPoint], str], sqlite_engine: AsyncEngine,
    mock: MockProcess, aiohttp_client: AiohttpClient,
) -> None:  # fmt: skip
    doc, run, series, page = real_run
    summary = doc["summary"]
    ok = summary["metrics"]["requests"] - summary["metrics"]["failures"]
    assert ok > 0 and summary["lengths"]["input"]["requests"] == ok
    # Every judged request met a 60 s TTFT: goodput is all of them, and the per-second good count says so.
    assert summary["metrics"]["goodput_rate"] == 1.0 and sum(p.good for p in series) == ok
    settings = parse_settings({"targets": [{"name": "mock", "base_url": mock.base_url}]})
    client = await aiohttp_client(dashboard_app(settings, sqlite_engine))
    dashboard = await (await client.get(f"/loadruns/{run.id}")).text()
    for shown in (page, dashboard):
        # The bars of each length histogram add up to the requests counted, and sit inside the measured range.
        for name in ("input", "output"):
            stats = summary["lengths"][name]
            bars = _bars(shown, f"{name.capitalize()} length")
            assert sum(v for _, _, v in bars) == stats["requests"] and len(bars) <= report.LENGTH_BINS
            assert int(bars[0][1].split("-")[0].removeprefix("requests ")) <= stats["p5"]
            assert report.length_text(name, stats) in shown
        assert "goodput: 100.00% of requests met ttft_ms&lt;=60000" in shown
        assert TRUST in shown and "TTFT error bound: p50" in shown and "Generator read lag" in shown
        assert "TTFT by session turn" not in shown  # no sessions in this run
        assert "INCONCLUSIVE" not in shown and "class=refusal>" not in shown and "bad refusal" not in shown
    assert "Goodput: requests meeting --goodput" in page and "<figcaption>Goodput<" in dashboard
    text = _printed(_outcome(run, series))
    assert "goodput: 100.00% of requests met ttft_ms<=60000" in text
    assert report.length_text("output", summary["lengths"]["output"]) in text and "TTFT error bound" in text


async def test_a_real_session_run_shows_ttft_by_turn(
    mock: MockProcess, tmp_path: Path, sqlite_db_url: str, sqlite_engine: AsyncEngine
) -> None:
    html = tmp_path / "report.html"
    proc = _loadtest("--base-url", mock.base_url, "--db", sqlite_db_url, "--users", "2", "--duration", "3s",
                     "--turns", "3", "--input-tokens", "64", "--output-tokens", "8", "--html", str(html))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (run,) = await LoadStore.from_engine(sqlite_engine).runs(1)
    assert run.summary is not None
    turns = run.summary["turns"]
    assert [t["turn"] for t in turns] == [1, 2, 3] and all(t["requests"] > 0 for t in turns)
    series = await LoadStore.from_engine(sqlite_engine).series(run.id)
    for shown in (html.read_text(encoding="utf-8"), _page(run, series)):
        bars = _bars(shown, "TTFT by session turn")
        assert [label for _, label, _ in bars] == [f"p{p} {t}" for t in (1, 2, 3) for p in (50, 95)]
        assert [v for s, _, v in bars if s == 1] == [pytest.approx(t["ttft_p95_ms"], rel=0.01) for t in turns]
        assert "workload: sessions" in shown and "prompt token counts from: server /tokenize" in shown
    text = _printed(_outcome(run, series))
    assert "TTFT by session turn" in text and "input tokens asked: 64" in proc.stdout
    for t in turns:
        assert re.search(rf"│\s+{t['turn']} │\s+{t['requests']:,} │", text), text


SATURATED = "requests in flight grew from 3 to 40 through the step"


def _full(summary: dict[str, Any]) -> dict[str, Any]:
    """`summary` with every new key present, from the documented shapes: sessions, a refusal, a sweep knee."""
    full = copy.deepcopy(summary)
    full["turns"] = [{"turn": t, "requests": 10 * t, "ttft_p50_ms": 40.0 * t, "ttft_p95_ms": 90.0 * t,
                      "ttft_p99_ms": 120.0 * t} for t in (1, 2, 3)]  # fmt: skip
    full["workload"] = {"kind": "sessions", "token_source": "server /tokenize", "input_tokens": "normal:512,128",
                        "output_tokens": 64, "ignore_eos": True, "sessions": {"turns": 3}, "prefixes": None,
                        "trace": None, "warnings": ["12 prompts shorter than asked"]}  # fmt: skip
    full["tokens_estimated"] = 7
    full["generator"] = {
        **full.get("generator", {}), "saturated": True,
        "processes": [{"name": "master", "role": "master", "cpu_s": 2.5, "cpu_fraction": 0.83},
                      {"name": "worker-1", "role": "worker", "cpu_s": 2.9, "cpu_fraction": 0.97}],
        "ttft_error_bound_ms": {"p50": 0.4, "p99": 12.5, "max": 40.0},
        "refusal": "no verdict: the load generator was the bottleneck (CPU 97% >= 90%); add --workers",
    }  # fmt: skip
    saturation = {"kind": "in_flight", "detail": SATURATED}
    steps = [{"step": i + 1, "rate": r, "kept_up": r < 8, "passed": r < 8,
              "saturation": None if r < 8 else saturation,
              "slo": [{"objective": "ttft_p95_ms<=1000", "value": 100.0 * r, "passed": True}],
              "metrics": {"rps": r * 0.99, "ttft_p95_ms": 100.0 * r, "goodput_rate": 1.0 - r / 20,
                          "goodput_rps": r * (1.0 - r / 20)}} for i, r in enumerate((2.0, 4.0, 8.0))]  # fmt: skip
    full["sweep"] = {"steps": steps, "goodput_rps": 4.0, "goodput_tokens_per_s": None,
                     "knee": {"index": 1, "rate": 4.0, "finished_rps": 3.96},
                     "saturated_at": {"step": 3, "rate": 8.0, **saturation}}  # fmt: skip
    return full


def _old(summary: dict[str, Any]) -> dict[str, Any]:
    """`summary` as a run stored before these keys: no lengths, turns, workload, goodput or error bounds."""
    old = copy.deepcopy(summary)
    for key in NEW_KEYS:
        old.pop(key, None)
    old["generator"] = {k: old["generator"][k] for k in ("cpu_s", "cpu_fraction", "saturated")}
    for name in [m for m in old["metrics"] if m.startswith(("goodput", "read_lag", "ttft_err", "itl_err"))]:
        del old["metrics"][name]
    return old


def _old_series(series: list[SeriesPoint]) -> list[SeriesPoint]:
    return [replace(p, good=0, goodput_judged=0, read_lag_p99_ms=None, ttft_err_p99_ms=None) for p in series]


async def test_sessions_a_knee_and_a_refusal_are_shown_and_an_older_run_hides_them(
    real_run: tuple[dict[str, Any], LoadRun, list[SeriesPoint], str],
) -> None:
    _, run, series, _ = real_run
    full = replace(run, status="inconclusive", summary=_full(run.summary or {}),
                   params={**run.params, "sweep": "2,4,8"})  # fmt: skip
    outcome = _outcome(full, series)
    page, dashboard, text = render_html(outcome), _page(full, series), _printed(outcome)
    refusal = "no verdict: the load generator was the bottleneck"
    for shown in (page, dashboard):
        assert [(s, label, v) for s, label, v in _bars(shown, "TTFT by session turn")] == [
            (s, f"p{p} {t}", m * t) for t in (1, 2, 3) for s, (p, m) in enumerate(((50, 40.0), (95, 90.0)))
        ]
        assert shown.count(refusal) == 2  # at the top and in the trust section
        assert "4 (knee)" in shown and "prompt token counts from: server /tokenize" in shown
        assert f"saturated at 8 req/s offered (knee 4 req/s; {SATURATED})" in shown
        assert "7 replies sent no usage" in shown and "warning: 12 prompts shorter than asked" in shown
        assert "TTFT error bound: p50 0.40 ms, p99 12.50 ms, max 40.00 ms" in shown and "worker-1" in shown
    # The terminal: the refusal first and last, the knee in the sweep table and its own line, turns in a table.
    lines = text.splitlines()
    assert lines[0].startswith("INCONCLUSIVE: no verdict") and text.rstrip().endswith("add --workers")
    assert "knee: 4 req/s offered" in text and re.search(r"│\s+4 knee │", text)
    assert f"saturated at 8 req/s offered (knee 4 req/s; {SATURATED})" in " ".join(text.split())
    assert "TTFT by session turn" in text and re.search(r"│\s+3 │\s+30 │\s+120\.0 ms │\s+270\.0 ms │", text)
    assert "generator CPU worker-1 (worker): 2.90 s, 97% of a core" in text

    old = replace(run, summary=_old(run.summary or {}))
    old_outcome = _outcome(old, _old_series(series))
    page, dashboard, text = render_html(old_outcome), _page(old, _old_series(series)), _printed(old_outcome)
    for shown in (page, dashboard):
        assert "Workload" not in shown and "Input length" not in shown and "TTFT by session turn" not in shown
        # An older run measured only the generator's CPU: the trust section has that, no bounds and no chart.
        assert TRUST in shown and "error bound" not in shown and "read lag" not in shown and "goodput:" not in shown
    assert "Goodput:" not in page and "tokens:" not in text and "goodput" not in text.lower()
    assert "generator CPU locust (master)" in text  # the older report's CPU still shows


def test_length_bins_cover_every_request_in_at_most_the_asked_number_of_equal_bars() -> None:
    stats = {"hist": [[1, 3], [2, 1], [999, 2], [1000, 5]]}
    bins = report.length_bins(stats, bins=24)
    assert len(bins) <= 24 and sum(c for _, _, c in bins) == 11
    assert bins[0][0] == 1 and bins[-1][1] == 1000 and len({hi - lo for lo, hi, _ in bins[:-1]}) == 1
    assert report.length_bins({"hist": [[16, 72]]}) == [(16, 16, 72)] and report.length_bins({}) == []
    assert report.knee_index({"steps": [{"rate": 1.0}], "knee": None}) is None
    assert report.knee_index({"steps": [{"rate": 1.0}, {"rate": 2.0}], "knee": {"index": 1}}) == 1
    # A sweep stored before saturation was judged says nothing of it; one that kept up says so.
    assert report.saturation_text({"steps": [{"rate": 1.0}]}) is None
    assert report.saturation_text({"steps": [], "saturated_at": None}) == "the server kept up with every step"
    first = {"steps": [{"rate": 1.0}], "saturated_at": {"rate": 1.0, "detail": "x"}, "knee": None}
    assert report.saturation_text(first) == "saturated at 1 req/s offered (below the first rate; x)"
    assert report.step_mark({"slo": []}) is None and report.step_mark({"slo": [{}], "passed": False}) == "fail"


def test_a_summary_with_none_of_the_sections_renders() -> None:
    # The barest stored summary (an early run): nothing to show, nothing to crash on.
    now = datetime.now(UTC)
    run = LoadRun(id=1, started_at=now, ended_at=now, heartbeat_at=now, status="completed", target="m",
                  base_url="http://127.0.0.1:1/v1", model=None, params={}, summary={"metrics": {}}, slo=[],
                  verdict=None, baseline_id=None, abort_reason=None)  # fmt: skip
    assert TRUST not in render_html(_outcome(run, [])) and TRUST not in _page(run, [])
    assert report.trust({"generator": None}).empty and report.workload_lines({"workload": "x"}) == []
