"""The dashboard's pages and the JSON they are built from, served by the API factory over real databases.

Statistics are checked against the results inserted (counts exact, percentiles within the rollup
histogram's accuracy) with part of the data rolled up and the rest only raw, so the two sources
must meet without double counting. Pages are checked for escaping, headers and leaked secrets.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from monitor.alerts import repo as alert_repo
from monitor.alerts.clock import SystemClock
from monitor.alerts.engine import AlertEngine
from monitor.alerts.model import fingerprint
from monitor.alerts.outbox import Outbox
from monitor.alerts.source import RawWindowSource
from monitor.alerts.state import AlertRecord
from monitor.config import Settings, load_settings
from monitor.dashboard.buckets import RAW_TAIL_MAX_S, Segment, plan
from monitor.dashboard.markup import Markup, el, esc
from monitor.dashboard.queries import public_url
from monitor.dashboard.routes import CSP
from monitor.dashboard.svg import Marker, Series, line_chart, nice_ticks, sparkline, time_ticks
from monitor.results import ProbeResult
from monitor.store.rollups import Rollups
from tests.dashboard_data import XSS, dashboard_app, result, seed_load_run

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
TOKEN = "tok-dashboard-secret"
TARGET_KEY = "sk-target-secret-key"
SVG = "{http://www.w3.org/2000/svg}"


def _settings(tmp_path: Path, *, token: bool = True) -> Settings:
    hello = [{"role": "user", "content": "你好"}]
    raw: dict[str, Any] = {
        "targets": [
            # Credentials in a URL must never reach a page (only the host and path are shown).
            {"name": "glm4", "base_url": "http://ops:hunter2@127.0.0.1:8000/v1?key=abc", "api_key_env": "GLM_KEY"},
        ],
        "probes": [
            {"name": "chat", "target": "glm4", "messages": hello, "max_tokens": 512},
            {"name": "completion", "target": "glm4", "endpoint": "completion", "prompt": "你好", "max_tokens": 8},
        ],
        "rules": [
            {"name": "slow", "kind": "threshold", "scope": {"probe": "chat"}, "metric": "latency_ms", "agg": "p95",
             "window": "10m", "op": ">", "value": 500},
        ],
        "api": {"token_env": "API_TOKEN"} if token else {},
    }  # fmt: skip
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return load_settings(path, environ={"API_TOKEN": TOKEN, "GLM_KEY": TARGET_KEY})


@pytest.fixture(name="make_client")
def fix_make_client(aiohttp_client: AiohttpClient, engine: AsyncEngine, tmp_path: Path) -> MakeClient:
    async def make(*, token: bool = True, engine_alerts: bool = False) -> Client:
        settings = _settings(tmp_path, token=token)
        alerts = None
        if engine_alerts:
            sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
            alerts = AlertEngine(
                settings, sessionmaker, source=RawWindowSource(sessionmaker), clock=SystemClock(),
                outbox=Outbox(sessionmaker),
            )  # fmt: skip
            await alerts.start()
        return await aiohttp_client(dashboard_app(settings, engine, alerts=alerts))

    return make


def _probes(tmp_path: Path) -> dict[str, Any]:
    return {p.name: p for p in _settings(tmp_path).probes}


async def _add(engine: AsyncEngine, results: list[ProbeResult], **kw: Any) -> None:
    from monitor.store.repo import Store

    await Store.from_engine(engine).add_results(results, **kw)


# --- pure pieces ---------------------------------------------------------------------------------------------


def test_markup_escapes_by_default() -> None:
    html = el("p", {"title": '"><script>x</script>', "class_": "a"}, XSS, Markup("<b>kept</b>"), [1, None, "&"])
    assert html == (
        '<p title="&quot;&gt;&lt;script&gt;x&lt;/script&gt;" class="a">'
        "&lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;&lt;script&gt;window.__xss=2&lt;/script&gt;"
        "<b>kept</b>1&amp;</p>"
    )
    assert Markup("<td>{}</td>").format("<i>") == "<td>&lt;i&gt;</td>"
    assert esc(Markup("<b>")) == "<b>"
    assert el("input", {"disabled": True, "hidden": False}) == "<input disabled>"
    for bad in ("javascript:alert(1)", "https://cdn.example.com/x.js", "//evil.example/x"):
        with pytest.raises(ValueError, match="same-site"):
            el("a", {"href": bad}, "x")
    with pytest.raises(ValueError, match="attribute"):
        el("a", {"onclick=x": 1})
    with pytest.raises(ValueError, match="tag"):
        el("a href=x", None)


def test_public_url_drops_credentials_and_query() -> None:
    assert public_url("http://ops:hunter2@127.0.0.1:8000/v1?key=abc") == "http://127.0.0.1:8000/v1"
    assert public_url("https://[::1]/v1") == "https://[::1]/v1"


def test_ticks_are_round() -> None:
    assert nice_ticks(930) == [0, 250, 500, 750, 1000]
    assert nice_ticks(1.0) == [0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(0) == [0.0, 1.0]
    day = 86400 * 20000  # a UTC midnight
    assert time_ticks(day + 10, day + 3 * 3600, 4) == [day + 3600, day + 7200, day + 10800]
    assert time_ticks(0, 95, 6, elapsed=True) == [0, 30, 60, 90]


def _svg(markup: str) -> ET.Element:
    return ET.fromstring(markup)


def test_line_chart_draws_lines_gaps_markers_and_escapes() -> None:
    points: list[tuple[float, float | None]] = [(0, 10), (60, 20), (120, None), (180, 30), (600, 40), (660, 50)]
    svg = _svg(
        line_chart(
            [Series("p95 " + XSS, points), Series("p50", [(0, 5), (60, 6)], style=1)],
            x_min=0, x_max=700, unit="ms", label="Latency", gap_x=150,
            markers=[Marker(100, 300, "slow: resolved", "resolved"), Marker(650, None, "slow: firing")],
        )
    )  # fmt: skip
    lines = {g.get("data-series"): g for g in svg.iter(f"{SVG}g")}
    d = lines["p95 " + XSS].find(f"{SVG}path").get("d")  # type: ignore[union-attr]
    # None and a jump over gap_x both start a new segment; five points are drawn.
    assert d is not None and d.count("M") == 2 and d.count("L") == 3
    assert len(lines["p95 " + XSS].findall(f"{SVG}circle")) == 5
    assert len(svg.findall(f".//{SVG}rect")) == 2 and len(svg.findall(f".//{SVG}line[@class='mark firing']")) == 1
    ticks = [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "yt"]
    assert ticks == ["0.0 ms", "20 ms", "40 ms", "60 ms"]
    empty = _svg(line_chart([Series("x", [])], x_min=0, x_max=60, unit="%", label="Errors", y_max=1.0))
    assert "No data in this window" in "".join(empty.itertext())
    spark = _svg(sparkline([None, 3, None, 5, 4], label="spark"))
    assert spark.find(f"{SVG}path").get("d", "").count("L") == 2  # type: ignore[union-attr]


def test_plan_reads_rollups_up_to_the_watermark_then_raw() -> None:
    now = datetime(2026, 11, 25, 12, 34, 56, tzinfo=UTC)
    mark = datetime(2026, 11, 25, 12, 33, tzinfo=UTC)
    segments, raw_from = plan(now - timedelta(hours=24), now, mark, hours=True)
    assert raw_from == mark
    assert segments == [
        Segment(60, datetime(2026, 11, 24, 12, 34, tzinfo=UTC), datetime(2026, 11, 24, 13, tzinfo=UTC)),
        Segment(3600, datetime(2026, 11, 24, 13, tzinfo=UTC), datetime(2026, 11, 25, 12, tzinfo=UTC)),
        Segment(60, datetime(2026, 11, 25, 12, tzinfo=UTC), mark),
    ]
    # No rollups yet (a young daemon): raw results only, and only for a bounded time back.
    segments, raw_from = plan(now - timedelta(hours=24), now, None, hours=False)
    assert (
        raw_from == datetime(2026, 11, 25, 9, 34, tzinfo=UTC) and (now - raw_from).total_seconds() < RAW_TAIL_MAX_S + 60
    )
    # A short window: minutes only.
    segments, raw_from = plan(now - timedelta(hours=1), now, mark, hours=False)
    assert segments == [Segment(60, datetime(2026, 11, 25, 11, 34, tzinfo=UTC), mark)] and raw_from == mark


# --- JSON the pages are built from ----------------------------------------------------------------------------


async def test_overview_json_counts_rollups_and_raw_tail_once(
    make_client: MakeClient, engine: AsyncEngine, tmp_path: Path
) -> None:
    probes = _probes(tmp_path)
    now = datetime.now(UTC)
    minutes = range(5, 1380, 10)  # every 10 min over the last 23 h, 6 of them in the last hour
    chat = [
        result(probes["chat"], now - timedelta(minutes=m), latency_ms=100.0 + m, ttft_ms=50.0)
        if m % 50 != 45 else result(probes["chat"], now - timedelta(minutes=m), error="refused")
        for m in minutes
    ]  # fmt: skip
    completion = [
        result(probes["completion"], now - timedelta(minutes=m), latency_ms=200.0, tokens=8, finish_reason="length")
        for m in minutes
    ]
    stale = [result(probes["chat"].model_copy(update={"name": "retired"}), now - timedelta(hours=2))]
    await _add(engine, [*chat, *completion, *stale])
    # Roll up everything older than 30 minutes; the newest three results per probe stay raw-only.
    await Rollups(async_sessionmaker(engine, expire_on_commit=False)).run(now - timedelta(minutes=30))

    client = await make_client()
    resp = await client.get("/api/v1/overview")
    assert resp.status == 200
    body = await resp.json()
    rows = {(r["target"], r["probe"]): r for r in body["rows"]}
    assert list(rows) == [("glm4", "chat"), ("glm4", "completion"), ("glm4", "retired")]
    c = rows[("glm4", "chat")]
    errors_day = sum(1 for m in minutes if m % 50 == 45)
    assert c["day"]["results"] == len(minutes) and c["day"]["errors"] == errors_day
    assert c["day"]["error_rate"] == pytest.approx(errors_day / len(minutes))
    assert c["hour"]["results"] == 6 and c["hour"]["errors"] == 1  # minutes 5..55, 45 failed
    # p95 of the five answered latencies in the last hour (105..155 ms, 145 failed): the 2 % histogram.
    assert c["hour"]["latency_p95_ms"] == pytest.approx(135.0, rel=0.03) or c["hour"]["latency_p95_ms"] == (
        pytest.approx(155.0, rel=0.03)
    )
    assert c["last"]["started_at"].startswith((now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M"))
    assert c["configured"] and c["status"] == "ok"
    spark = c["spark_latency_p95_ms"]
    assert len(spark) == 60 and sum(v is not None for v in spark) == 5
    comp = rows[("glm4", "completion")]
    assert comp["day"]["truncation_rate"] == 1.0 and comp["day"]["error_rate"] == 0.0
    assert rows[("glm4", "retired")]["configured"] is False and rows[("glm4", "retired")]["day"]["results"] == 1
    assert body["alerts"] == []


async def test_probe_json_over_each_window(make_client: MakeClient, engine: AsyncEngine, tmp_path: Path) -> None:
    chat = _probes(tmp_path)["chat"]
    now = datetime.now(UTC)
    ages_h = [0.25, 0.5, 5, 20, 3 * 24, 6 * 24, 12 * 24]
    await _add(engine, [result(chat, now - timedelta(hours=h), latency_ms=300.0 + h) for h in ages_h])
    await _add(engine, [result(chat, now - timedelta(minutes=2), text="reply: " + XSS)])
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    await Rollups(sessionmaker).rollup_range(now - timedelta(days=13), now - timedelta(minutes=10))

    client = await make_client()
    expected = {"1h": (60, 3), "24h": (900, 5), "7d": (3600, 7), "30d": (4 * 3600, 8)}
    for window, (step_s, count) in expected.items():
        resp = await client.get("/api/v1/probes/glm4/chat", params={"window": window})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["step_s"] == step_s and body["totals"]["results"] == count, window
        assert sum(s["results"] for s in body["steps"]) == count
        starts = [s["start"] for s in body["steps"]]
        assert starts == sorted(starts)
    assert body["target_url"] == "http://127.0.0.1:8000/v1"
    newest = body["recent"][0]
    assert newest["text"] == "reply: " + XSS and {c["name"] for c in newest["checks"]} >= {"truncated", "run_on"}
    resp = await client.get("/api/v1/probes/glm4/chat", params={"window": "2y"})
    assert resp.status == 400 and "window" in (await resp.json())["error"]
    resp = await client.get("/api/v1/probes/glm4/nope")
    assert resp.status == 404


async def test_alerts_on_pages_from_the_engine_and_from_the_tables(
    make_client: MakeClient, engine: AsyncEngine, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    labels = {"alertname": "slow", "probe": "chat", "target": "glm4", "severity": "critical"}
    record = AlertRecord(
        fingerprint=fingerprint(labels), rule="slow", labels=labels, state="firing",
        annotations={"summary": "slow " + XSS}, active_since=now - timedelta(minutes=3),
        fired_at=now - timedelta(minutes=2), last_value=812.0, threshold=500.0, last_eval_at=now,
    )  # fmt: skip
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    async with sessionmaker() as session, session.begin():
        await alert_repo.save_record(session, record, now)
        await alert_repo.add_silence(
            session, matchers={"alertname": "slow"}, duration_s=600, comment="deploy " + XSS, created_by="ops", now=now
        )
    await _add(engine, [result(_probes(tmp_path)["chat"], now - timedelta(minutes=1), latency_ms=812.0)])
    for engine_alerts in (False, True):
        client = await make_client(engine_alerts=engine_alerts)
        body = await (await client.get("/api/v1/overview")).json()
        assert [a["rule"] for a in body["alerts"]] == ["slow"]
        chat = next(r for r in body["rows"] if r["probe"] == "chat")
        assert chat["status"] == "firing"
        detail = await (await client.get("/api/v1/probes/glm4/chat?window=1h")).json()
        assert [(m["rule"], m["state"], m["end"]) for m in detail["alert_marks"]] == [("slow", "firing", None)]
        page = await (await client.get("/alerts")).text()
        assert "p95 latency_ms 812 ms &gt; 500 ms" in page
        assert "deploy &lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;" in page
        assert 'data-expire-silence="1"' in page
        overview = await (await client.get("/")).text()
        assert overview.index('id="firing"') < overview.index("<h2>Probes</h2>")
        assert "slow &lt;img src=x" in overview and XSS not in overview


async def test_load_runs_json_with_series_canaries_and_baseline(
    make_client: MakeClient, engine: AsyncEngine, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    slo = [{"metric": "ttft_p95_ms", "op": "<=", "threshold": 400, "value": 312.0, "passed": True}]
    first = await seed_load_run(engine, started_at=now - timedelta(hours=2), seconds=30, rps=40, ttft_ms=100,
                                slo=slo, verdict="pass")  # fmt: skip
    chat = _probes(tmp_path)["chat"]
    canaries = [
        result(chat, now - timedelta(minutes=59), text=XSS),
        result(chat, now - timedelta(minutes=58), error="x"),
    ]
    second = await seed_load_run(engine, started_at=now - timedelta(hours=1), seconds=20, rps=30, ttft_ms=200,
                                 slo=[], verdict=None, baseline_id=first, canaries=canaries)  # fmt: skip
    client = await make_client()
    runs = await (await client.get("/api/v1/loadruns")).json()
    assert [(r["id"], r["status"], r["verdict"]) for r in runs] == [
        (second, "completed", None),
        (first, "passed", "pass"),
    ]
    body = await (await client.get(f"/api/v1/loadruns/{second}")).json()
    assert len(body["series"]) == 20 and body["series"][0]["t_s"] == 0
    assert [(c["ok"], c["error_kind"]) for c in body["canaries"]] == [(True, None), (False, "connect_error")]
    assert body["baseline"]["id"] == first
    rows = {c["metric"]: c for c in body["comparison"]}
    assert rows["ttft_p95_ms"]["change"] == pytest.approx(1.0) and rows["ttft_p95_ms"]["verdict"] == "worse"
    assert rows["rps"]["verdict"] == "worse" and rows["canary_ok_rate"]["baseline"] is None
    # The baseline can be picked on the page (and none compares with nothing).
    body = await (await client.get(f"/api/v1/loadruns/{first}", params={"baseline": str(second)})).json()
    assert body["baseline"]["id"] == second and body["comparison"][0]["verdict"] == "better"
    assert (await client.get("/api/v1/loadruns/999")).status == 404
    assert (await client.get(f"/api/v1/loadruns/{first}?baseline=x")).status == 400
    page = await (await client.get(f"/loadruns/{second}")).text()
    assert page.count('<svg class="chart"') == 5 and "Baseline #" in page and "SLO" in page
    assert (await client.get("/loadruns/999")).status == 404


# --- pages: escaping, headers, secrets ------------------------------------------------------------------------

_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
_EVENT_ATTR = re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.IGNORECASE)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_pages_escape_untrusted_text_send_security_headers_and_no_secrets(
    make_client: MakeClient, engine: AsyncEngine, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    chat = _probes(tmp_path)["chat"]
    await _add(engine, [result(chat, now - timedelta(minutes=1), text=XSS), result(chat, now, error=XSS)])
    run = await seed_load_run(engine, started_at=now - timedelta(hours=1), seconds=5, rps=5, ttft_ms=100, slo=[],
                              verdict=None, canaries=[result(chat, now - timedelta(minutes=59), text=XSS)])  # fmt: skip
    client = await make_client()
    pages = ["/", "/alerts", "/probes/glm4/chat", "/probes/glm4/chat?window=7d", "/loadruns", f"/loadruns/{run}"]
    for path in pages:
        resp = await client.get(path)
        html = await resp.text()
        assert resp.status == 200, path
        assert resp.headers["Content-Security-Policy"] == CSP
        assert resp.headers["X-Content-Type-Options"] == "nosniff" and resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["Content-Type"].startswith("text/html")
        assert _INLINE_SCRIPT.search(html) is None and _EVENT_ATTR.search(html) is None, path
        assert " style=" not in html and "<style" not in html, path
        assert "http://" not in html.replace("http://127.0.0.1:8000/v1", "").replace("http://www.w3.org/2000/svg", "")
        for secret in (TOKEN, TARGET_KEY, "hunter2", "key=abc"):
            assert secret not in html, (path, secret)
        assert "<script>window.__xss" not in html and "<img src=x" not in html
    probe_page = await (await client.get("/probes/glm4/chat")).text()
    assert "&lt;script&gt;window.__xss=2&lt;/script&gt;" in probe_page  # shown, as text
    for name, kind in (
        ("dashboard.js", "text/javascript"),
        ("dashboard.css", "text/css"),
        ("favicon.svg", "image/svg"),
    ):
        resp = await client.get(f"/static/{name}")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith(kind)
        assert resp.headers["Content-Security-Policy"] == CSP and resp.headers["X-Content-Type-Options"] == "nosniff"
    missing = await client.get("/static/../settings.py")
    assert missing.status == 404
    for path, status in (("/probes/glm4/nope", 404), ("/probes/glm4/chat?window=2y", 400), ("/loadruns/12345", 404)):
        resp = await client.get(path)
        assert resp.status == status and resp.headers["Content-Security-Policy"] == CSP, path
        assert "text/html" in resp.headers["Content-Type"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_silence_form_needs_a_token(make_client: MakeClient, engine: AsyncEngine) -> None:
    without = await make_client(token=False)
    page = await (await without.get("/alerts")).text()
    assert "needs an API token" in page and "<fieldset disabled>" in page
    with_token = await make_client(token=True, engine_alerts=True)
    page = await (await with_token.get("/alerts")).text()
    assert "<fieldset>" in page and 'type="password"' in page and TOKEN not in page
    # The form posts to the API, which refuses writes without the bearer token.
    body = {"matchers": {"alertname": "slow"}, "duration_s": 60, "comment": "x"}
    assert (await with_token.post("/api/v1/silences", json=body)).status == 401
    resp = await with_token.post("/api/v1/silences", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 201
