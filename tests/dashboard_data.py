"""Test data for the dashboard tests: probe results with chosen times and numbers, and the app factory.

`dashboard_app` builds the API app exactly as the daemon does (`monitor.api.create_app`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.api import create_app
from monitor.checks import run_checks
from monitor.config import ProbeSettings, Settings
from monitor.dashboard.routes import DASHBOARD_KEY
from monitor.loadtest.repo import LoadStore, SeriesPoint
from monitor.meter import StreamMeasurement
from monitor.results import ProbeResult
from monitor.store.repo import Store
from monitor.store.rollups import Rollups

XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
GREETING = "你好！我是人工智能助手，很高兴见到你，有什么可以帮你的吗？"


def dashboard_app(
    settings: Settings, engine: AsyncEngine, *, alerts: Any = None, rollups: Rollups | None = None
) -> web.Application:
    """The daemon's API app, built by the production factory (which mounts the dashboard); `rollups` serve trends."""
    app = create_app(settings, store=Store.from_engine(engine), db=engine, alerts=alerts, rollups=rollups)
    assert DASHBOARD_KEY in app
    return app


def measurement(
    *,
    endpoint: str = "chat",
    text: str = GREETING,
    latency_ms: float = 800.0,
    ttft_ms: float | None = 120.0,
    tokens: int = 24,
    finish_reason: str = "stop",
    stream: bool = True,
) -> StreamMeasurement:
    gap_ms = (latency_ms - (ttft_ms or 0.0)) / max(tokens - 1, 1)
    return StreamMeasurement(
        endpoint="chat" if endpoint == "chat" else "completion",
        stream=stream,
        text=text,
        ttft_ms=ttft_ms if stream else None,
        latency_ms=latency_ms,
        itl_ms=tuple(gap_ms for _ in range(tokens - 1)) if stream else (),
        chunk_count=tokens + 2 if stream else 1,
        content_chunk_count=tokens if stream else 1,
        prompt_tokens=9,
        completion_tokens=tokens,
        tokens_estimated=False,
        itl_per_token_exact=stream,
        finish_reason=finish_reason,
        stop_reason=None,
        done_seen=stream,
        error_kind=None,
        error_detail=None,
    )


def result(
    probe: ProbeSettings,
    started_at: datetime,
    *,
    error: str | None = None,
    **kw: Any,
) -> ProbeResult:
    """A stored-looking result of `probe` at `started_at`; `error` makes it a failed request (connect_error)."""
    if error is not None:
        return ProbeResult(
            probe=probe.name, target=probe.target, endpoint=probe.endpoint, stream=probe.stream,
            started_at=started_at, max_tokens=probe.max_tokens, error_kind="connect_error", error_detail=error,
            elapsed_ms=kw.get("latency_ms", 3.0),
        )  # fmt: skip
    m = measurement(endpoint=probe.endpoint, stream=probe.stream, **kw)
    return ProbeResult(
        probe=probe.name, target=probe.target, endpoint=probe.endpoint, stream=probe.stream, started_at=started_at,
        max_tokens=probe.max_tokens, http_status=200, measurement=m, checks=run_checks(probe, m),
    )  # fmt: skip


def history(probe: ProbeSettings, now: datetime, *, hours: float, every_s: float, seed: int = 1) -> list[ProbeResult]:
    """A day-like history: latency with a daily swell, noise, and an incident (slow, some errors) 5 h ago."""
    rng = random.Random(seed)
    out: list[ProbeResult] = []
    count = int(hours * 3600 / every_s)
    base = 650.0 if probe.endpoint == "chat" else 220.0
    for i in range(count):
        at = now - timedelta(seconds=(count - i) * every_s)
        hours_ago = (now - at).total_seconds() / 3600
        incident = 4.5 <= hours_ago <= 5.5
        latency = base * (1 + 0.15 * math.sin(hours_ago / 24 * 2 * math.pi)) * rng.uniform(0.85, 1.25)
        if incident:
            latency *= 2.6
        if incident and rng.random() < 0.3:
            out.append(result(probe, at, error="Cannot connect to host 127.0.0.1:8000"))
            continue
        tokens = rng.randint(18, 40) if probe.endpoint == "chat" else (probe.max_tokens or 16)
        out.append(
            result(probe, at, latency_ms=latency, ttft_ms=latency * rng.uniform(0.12, 0.2), tokens=tokens,
                   finish_reason="stop" if probe.endpoint == "chat" else "length", text=GREETING[: tokens])
        )  # fmt: skip
    return out


def series(
    seconds: int, *, rps: float, ttft_ms: float, itl_ms: float, start: datetime, seed: int = 7
) -> list[SeriesPoint]:
    """Per-second load series: a ramp over the first tenth, then steady with noise."""
    rng = random.Random(seed)
    points = []
    for t in range(seconds):
        ramp = min(1.0, (t + 1) / max(seconds / 10, 1))
        requests = max(0, round(rps * ramp * rng.uniform(0.85, 1.15)))
        failures = 1 if rng.random() < 0.04 else 0
        load = 1 + 0.6 * ramp
        points.append(
            SeriesPoint(
                t_s=t, ts=start + timedelta(seconds=t), users=round(32 * ramp), requests=requests, failures=failures,
                sent=requests, output_tokens=requests * 128, truncated=0,
                ttft_p50_ms=ttft_ms * load * rng.uniform(0.9, 1.1), ttft_p95_ms=ttft_ms * load * rng.uniform(1.5, 1.9),
                itl_p50_ms=itl_ms * rng.uniform(0.95, 1.05), itl_p95_ms=itl_ms * rng.uniform(1.3, 1.6),
                e2e_p50_ms=None, e2e_p95_ms=None, lag_p95_ms=None, errors={"http_error": failures} if failures else {},
            )
        )  # fmt: skip
    return points


async def seed_load_run(
    engine: AsyncEngine,
    *,
    started_at: datetime,
    seconds: int,
    rps: float,
    ttft_ms: float,
    slo: list[dict[str, Any]],
    verdict: str | None,
    baseline_id: int | None = None,
    canaries: Sequence[ProbeResult] = (),
) -> int:
    """A finished load run with its per-second series, summary, SLO verdict and linked canaries."""
    store = LoadStore.from_engine(engine)
    run_id = await store.create_run(
        started_at=started_at, target="glm4", base_url="http://127.0.0.1:8000/v1", model="glm-4-9b-chat",
        params={"endpoint": "chat", "load_model": "closed", "users": 32, "duration_s": seconds, "max_tokens": 128,
                "stream": True, "slo": "ttft_p95_ms<=400,error_rate<=5%"},
        baseline_id=baseline_id,
    )  # fmt: skip
    points = series(seconds, rps=rps, ttft_ms=ttft_ms, itl_ms=18.0, start=started_at)
    await store.save_series(run_id, points)
    if canaries:
        await Store.from_engine(engine).add_results(canaries, load_run_id=run_id)
    requests = sum(p.requests for p in points)
    failures = sum(p.failures for p in points)
    metrics = {
        "requests": requests, "failures": failures, "error_rate": failures / requests, "truncation_rate": 0.0,
        "rps": requests / seconds, "tokens_per_s": requests * 128 / seconds, "ttft_p50_ms": ttft_ms * 1.5,
        "ttft_p95_ms": ttft_ms * 2.6, "itl_p50_ms": 18.0, "itl_p95_ms": 26.0, "e2e_p95_ms": ttft_ms * 2.6 + 128 * 26,
    }  # fmt: skip
    ok = sum(1 for c in canaries if c.ok)
    canary = {"count": len(canaries), "ok": ok, "ok_rate": ok / len(canaries) if canaries else None}
    await store.finish_run(
        run_id, status={"pass": "passed", "fail": "failed", None: "completed"}[verdict],
        ended_at=started_at + timedelta(seconds=seconds), summary={"duration_s": seconds, "metrics": metrics,
                                                                   "canary": canary},
        slo=slo, verdict=verdict,
    )  # fmt: skip
    return run_id
