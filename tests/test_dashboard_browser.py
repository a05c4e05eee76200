"""The dashboard in a real headless Chromium (Debian's `chromium`), driven over the DevTools protocol.

A real daemon probes the real mock every second (plus a day of seeded history, so the trend
charts have a shape), an alert rule fires, and a reply carrying an XSS payload is stored. The
browser then loads the pages from the daemon's own port and we check what a person would see:
charts with data points, the firing alert on top, the payload shown as text and never run, no
CSP violations or script errors, no sideways scrolling on a phone, and a silence added through
the alerts page with the API token.

`UPDATE_SCREENSHOT=1` also writes the screenshots to docs/ (the README shows docs/dashboard.png).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from monitor.config import Settings, parse_settings
from monitor.daemon import Daemon
from monitor.store.db import connect, ensure_schema
from monitor.store.repo import Store
from tests.dashboard_data import XSS, history, result, seed_load_run
from tests.mockserver import REPO_ROOT, MockProcess

CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--force-color-profile=srgb", "--lang=en-US",
)  # fmt: skip
TOKEN = "dashboard-test-token"
DOCS = REPO_ROOT / "docs"
STARTUP_TIMEOUT_S = 15.0


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page target (commands, events, waits)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._event = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            else:
                async with self._event:
                    self.events.append(data)
                    self._event.notify_all()

    async def close(self) -> None:
        self._reader.cancel()
        with suppress(asyncio.CancelledError):
            await self._reader

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        await self._ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, 15)
        if "error" in reply:
            raise AssertionError(f"{method} failed: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def wait_event(self, method: str, after: int, timeout_s: float = 15.0) -> dict[str, Any]:
        async def found() -> dict[str, Any]:
            async with self._event:
                while True:
                    for event in self.events[after:]:
                        if event["method"] == method:
                            return event
                    await self._event.wait()

        return await asyncio.wait_for(found(), timeout_s)

    async def open(self, url: str) -> None:
        mark = len(self.events)
        reply = await self.send("Page.navigate", url=url)
        assert "errorText" not in reply, reply
        await self.wait_event("Page.loadEventFired", mark)

    async def eval(self, expression: str) -> Any:
        reply = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise AssertionError(f"{expression!r} threw: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def until(self, expression: str, timeout_s: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            await asyncio.sleep(0.1)

    async def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile
        )

    async def screenshot(self, path: Path, *, width: int, max_height: int = 20_000) -> None:
        """A PNG of the whole page (not only the viewport), from the top."""
        await self.eval("window.scrollTo(0, 0)")
        height = min(int(await self.eval("document.documentElement.scrollHeight")), max_height)
        shot = await self.send(
            "Page.captureScreenshot", format="png", captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        )  # fmt: skip
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))

    def problems(self) -> list[str]:
        """Script errors, CSP violations and failed loads the page reported."""
        out = []
        for event in self.events:
            params = event.get("params", {})
            if event["method"] == "Runtime.exceptionThrown":
                out.append(str(params["exceptionDetails"]))
            elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
                out.append(params["entry"]["text"])
            elif event["method"] == "Runtime.consoleAPICalled" and params["type"] == "error":
                out.append(str(params["args"]))
        return out


@asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[DevTools]:
    """Headless Chromium with a fresh profile; yields a DevTools client attached to its page."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("chromium is not installed: run .ci/install-chromium (CI runs it before the tests)")
    proc = await asyncio.create_subprocess_exec(
        binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    drain: asyncio.Task[None] | None = None
    try:
        port = await asyncio.wait_for(_devtools_port(proc.stderr), STARTUP_TIMEOUT_S)
        # Keep reading stderr so that Chromium never blocks on a full pipe.
        drain = asyncio.create_task(_drain(proc.stderr))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            page = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                tools = DevTools(ws)
                try:
                    for domain in ("Page", "Runtime", "Log"):
                        await tools.send(f"{domain}.enable")
                    yield tools
                finally:
                    await tools.close()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            drain.cancel()
            with suppress(asyncio.CancelledError):
                await drain


async def _devtools_port(stderr: asyncio.StreamReader) -> int:
    while True:
        line = await stderr.readline()
        if not line:
            raise AssertionError("chromium exited before opening its DevTools port")
        match = re.search(rb"DevTools listening on ws://[^:]+:(\d+)/", line)
        if match:
            return int(match.group(1))


async def _drain(stderr: asyncio.StreamReader) -> None:
    while await stderr.read(65536):
        pass


@asynccontextmanager
async def daemon_serving(settings: Settings) -> AsyncIterator[Daemon]:
    daemon = Daemon(settings)
    task = asyncio.create_task(daemon.serve())
    started = asyncio.create_task(daemon.started.wait())
    await asyncio.wait({task, started}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        started.cancel()
        if task.done():
            task.result()
        task.cancel()
        raise AssertionError("daemon did not start")
    try:
        yield daemon
    finally:
        daemon.request_stop("test finished")
        assert await asyncio.wait_for(task, 30) == 0


async def _poll(check: Callable[[], Any], what: str, timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def _config(base_url: str, db_url: str) -> dict[str, Any]:
    hello = [{"role": "user", "content": "你好"}]
    return {
        "storage": {"url": db_url},
        "targets": [
            {"name": "glm4", "base_url": base_url, "model": "glm-4-9b-chat", "timeout_s": 10},
            # Nothing listens on port 9: every probe of this target is a connect_error.
            {"name": "standby", "base_url": "http://127.0.0.1:9/v1", "model": "glm-4-9b-chat", "timeout_s": 2},
        ],
        "probes": [
            {"name": "chat-hello", "target": "glm4", "messages": hello, "max_tokens": 512, "interval_s": 1},
            {"name": "completion-hello", "target": "glm4", "endpoint": "completion", "prompt": "你好",
             "max_tokens": 16, "stream": False, "interval_s": 1},
            {"name": "chat-short", "target": "glm4", "messages": hello, "max_tokens": 7, "interval_s": 1},
            {"name": "chat-standby", "target": "standby", "messages": hello, "max_tokens": 64, "interval_s": 1},
        ],
        "rules": [
            {"name": "slow-replies", "kind": "threshold", "scope": {"probe": "chat-hello"}, "metric": "latency_ms",
             "agg": "p95", "window": "10m", "op": ">", "value": 500, "severity": "critical",
             "annotations": {"summary": "p95 latency above 500 ms", "description": "see the runbook " + XSS}},
            {"name": "standby-down", "kind": "consecutive_failures", "scope": {"target": "standby"}, "count": 3},
        ],
        "api": {"port": 0},
        "retention": {"rollup_interval_s": 2},
        "daemon": {"shutdown_grace_s": 3},
    }  # fmt: skip


SLO_PASS = [
    {"metric": "ttft_p95_ms", "op": "<=", "threshold": 400, "value": 312.0, "passed": True},
    {"metric": "error_rate", "op": "<=", "threshold": 0.05, "value": 0.021, "passed": True},
]
SLO_FAIL = [{"metric": "ttft_p95_ms", "op": "<=", "threshold": 400, "value": 468.0, "passed": False},
            {"metric": "error_rate", "op": "<=", "threshold": 0.05, "value": 0.035, "passed": True}]  # fmt: skip


async def _seed(db_url: str, settings: Settings) -> tuple[int, int]:
    """A day of history for the glm4 probes, a stored reply carrying an XSS payload, and two load runs.

    Returns the ids of the two runs (baseline, later run).
    """
    now = datetime.now(UTC)
    engine = await connect(db_url)
    try:
        await ensure_schema(engine)
        store = Store.from_engine(engine)
        probes = {p.name: p for p in settings.probes}
        for name in ("chat-hello", "completion-hello"):
            await store.add_results(history(probes[name], now, hours=24, every_s=60, seed=len(name)))
        await store.add_results([result(probes["chat-hello"], now, text="Here is my answer: " + XSS, latency_ms=700)])
        start = now - timedelta(hours=3)
        baseline = await seed_load_run(engine, started_at=start, seconds=90, rps=40, ttft_ms=120, slo=SLO_PASS,
                                       verdict="pass")  # fmt: skip
        during = start + timedelta(hours=1)
        canaries = [result(probes["chat-hello"], during + timedelta(seconds=15 * i), latency_ms=900 + 40 * i)
                    for i in range(6)]  # fmt: skip
        later = await seed_load_run(engine, started_at=during, seconds=90, rps=36, ttft_ms=180, slo=SLO_FAIL,
                                    verdict="fail", baseline_id=baseline, canaries=canaries)  # fmt: skip
        return baseline, later
    finally:
        await engine.dispose()


async def test_dashboard_in_headless_chromium(mock: MockProcess, sqlite_db_url: str, tmp_path: Path) -> None:
    raw = _config(mock.base_url, sqlite_db_url)
    settings = parse_settings(raw).model_copy(update={"api_token": SecretStr(TOKEN)})
    baseline_run, later_run = await _seed(sqlite_db_url, settings)
    mock.configure(ttft_ms=60, itl_ms=25)

    async with daemon_serving(settings) as daemon, aiohttp.ClientSession() as http:
        base = daemon.api_url
        assert base is not None

        async def firing() -> bool:
            async with http.get(base + "/api/v1/alerts") as resp:
                return any(a["state"] == "firing" and a["rule"] == "standby-down" for a in await resp.json())

        async def rolled_up() -> bool:
            async with http.get(base + "/api/v1/trend?since=2h&step_s=60") as resp:
                return bool(await resp.json())

        await _poll(firing, "the standby-down alert to fire")
        await _poll(rolled_up, "the first rollup run")
        async with chromium(tmp_path / "profile") as cdp:
            await _check_overview(cdp, base, tmp_path)
            await _check_probe_page(cdp, base, tmp_path)
            await _check_alerts_page(cdp, base, tmp_path)
            await _check_load_runs(cdp, base, baseline_run, later_run, tmp_path)
            assert cdp.problems() == []


async def _check_overview(cdp: DevTools, base: str, tmp_path: Path) -> None:
    await cdp.viewport(1280, 900)
    # The viewer is in Shanghai; the server knows nothing about that and sends UTC.
    await cdp.send("Emulation.setTimezoneOverride", timezoneId="Asia/Shanghai")
    await cdp.open(base + "/")
    assert await cdp.eval("document.getElementById('tz').textContent") == "(Asia/Shanghai)"
    assert await cdp.eval("document.querySelectorAll('table.overview tbody tr').length") == 4
    text = await cdp.eval("document.body.innerText")
    # Firing alerts come first on the page, above the probe table.
    firing = await cdp.eval("document.querySelector('#firing').innerText")
    assert "standby-down" in firing and "slow-replies" in firing, firing
    assert text.index("standby-down") < text.index("Probes")
    assert await cdp.eval("document.querySelectorAll('svg.spark path.spark-line').length") >= 3
    # Times are rewritten to the viewer's zone by the page script (the server writes UTC).
    assert "UTC" not in await cdp.eval("document.querySelector('table.overview time').textContent")
    assert await cdp.eval("typeof window.__xss") == "undefined"
    await _refreshes_itself(cdp)
    await cdp.screenshot(tmp_path / "dashboard.png", width=1280)
    await _phone_fits(cdp, tmp_path / "phone-overview.png")
    await cdp.viewport(1280, 900)
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        await cdp.open(base + "/")
        await cdp.screenshot(DOCS / "dashboard.png", width=1280)


async def _refreshes_itself(cdp: DevTools) -> None:
    """The pause toggle stops auto-refresh (and remembers it); resuming refetches the live region at once."""
    assert await cdp.eval("document.getElementById('live').dataset.refreshS") == "30"
    await cdp.eval("document.querySelector('#live > div').dataset.old = '1'")
    await cdp.eval("document.getElementById('refresh-toggle').click()")
    assert await cdp.eval("document.getElementById('refresh-toggle').textContent") == "Auto-refresh paused"
    assert await cdp.eval("localStorage.getItem('llm-monitor.refresh-paused')") == "1"
    await cdp.eval("document.getElementById('refresh-toggle').click()")
    await cdp.until("!document.querySelector('#live > div').dataset.old")
    assert await cdp.eval("document.querySelectorAll('table.overview tbody tr').length") == 4
    assert await cdp.eval("document.getElementById('updated-at').textContent") != "failed, retrying"


async def _phone_fits(cdp: DevTools, shot: Path) -> None:
    """At 390 px the page itself never scrolls sideways (wide tables scroll inside their own box)."""
    await cdp.viewport(390, 844, mobile=True)
    await cdp.eval("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    overflow = await cdp.eval("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 2, f"the page is {overflow} px wider than a phone screen"
    await cdp.screenshot(shot, width=390, max_height=1600)


async def _vertices(cdp: DevTools) -> list[int]:
    """Per chart on the page: how many data points its lines draw (the M/L commands of `path.series`)."""
    counts: list[int] = await cdp.eval(
        "Array.from(document.querySelectorAll('svg.chart')).map(s => "
        "Array.from(s.querySelectorAll('path.series')).map(p => (p.getAttribute('d') || '').split(/[ML]/).length - 1)"
        ".reduce((a, b) => a + b, 0))"
    )
    return counts


async def _check_probe_page(cdp: DevTools, base: str, tmp_path: Path) -> None:
    await cdp.open(base + "/probes/glm4/chat-hello?window=24h")
    charts = await cdp.eval("document.querySelectorAll('svg.chart').length")
    # Latency, TTFT, TTFA, ITL, completion tokens, reasoning tokens, errors and truncation.
    assert charts == 7
    # Every chart has a drawn line with points; the latency chart has one per 15-minute step.
    paths = await _vertices(cdp)
    assert all(n > 0 for n in paths), paths
    assert paths[0] >= 90, paths  # two lines (p50, p95) over ~96 steps of the seeded day
    # Alert markers on the time axis (slow-replies fires on this probe).
    assert await cdp.eval("document.querySelectorAll('svg.chart .mark.firing').length") >= 1
    # The payload is shown as text in the latest replies, and it never ran.
    assert await cdp.eval("typeof window.__xss") == "undefined"
    text = await cdp.eval("document.body.innerText")
    assert "<script>window.__xss=2</script>" in text and '<img src=x onerror="window.__xss=1">' in text
    # Reply times are shown in the viewer's zone (Shanghai, UTC+8), not as the UTC the server sent.
    shown, shanghai, utc = await cdp.eval(
        "(() => { const t = document.querySelector('.reply-card time'); const d = new Date(t.dateTime);"
        " const o = {year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit'};"
        " return [t.textContent, d.toLocaleString(undefined, {...o, timeZone: 'Asia/Shanghai'}),"
        " d.toLocaleString(undefined, {...o, timeZone: 'UTC'})]; })()"
    )
    assert shown == shanghai != utc
    assert await cdp.eval("document.querySelectorAll('main img, main script').length") == 0
    await cdp.screenshot(tmp_path / "dashboard-probe.png", width=1280)
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        await cdp.screenshot(DOCS / "dashboard-probe.png", width=1280)
    await _phone_fits(cdp, tmp_path / "phone-probe.png")
    await cdp.viewport(1280, 900)


async def _check_alerts_page(cdp: DevTools, base: str, tmp_path: Path) -> None:
    await cdp.open(base + "/alerts")
    firing = await cdp.eval("document.querySelector('#firing').innerText")
    assert "standby-down" in firing and "slow-replies" in firing
    assert "<script>window.__xss=2</script>" in firing
    # Add a silence through the form: the token goes from the password field to the API as a bearer header.
    await cdp.eval(
        "(() => { const f = document.getElementById('silence-form');"
        " document.querySelector('[data-silence-alertname=\"standby-down\"]').click();"
        " f.elements.comment.value = 'standby is switched off';"
        " f.elements.token.value = " + json.dumps(TOKEN) + ";"
        " f.requestSubmit(); })()"
    )
    await cdp.until("document.getElementById('form-msg').textContent.includes('added')")
    await cdp.until("document.querySelector('#silences').innerText.includes('standby is switched off')")
    await cdp.screenshot(tmp_path / "dashboard-alerts.png", width=1280)
    silences = await cdp.eval("document.querySelector('#silences').innerText")
    assert "alertname=standby-down" in silences and "target=standby" in silences
    # The token is never part of a page: not in the HTML the server sent, not in storage.
    assert TOKEN not in await cdp.eval("document.documentElement.outerHTML")
    assert TOKEN not in await cdp.eval("JSON.stringify(Object.assign({}, localStorage, sessionStorage))")


async def _check_load_runs(cdp: DevTools, base: str, baseline: int, later: int, tmp_path: Path) -> None:
    await cdp.open(base + "/loadruns")
    rows = await cdp.eval("Array.from(document.querySelectorAll('table.grid tbody tr')).map(r => r.innerText)")
    assert len(rows) == 2 and "SLO fail" in rows[0] and "SLO pass" in rows[1], rows
    await cdp.open(f"{base}/loadruns/{later}")
    # The run names its own baseline; each chart draws this run and, dashed, the baseline.
    assert await cdp.eval("document.querySelectorAll('svg.chart').length") == 5
    assert await cdp.eval("document.querySelectorAll('svg.chart path.series.dashed').length") == 7
    assert all(n >= 90 for n in await _vertices(cdp))  # 90 s of this run (and of the baseline)
    text = await cdp.eval("document.body.textContent")
    assert f"Baseline #{baseline}" in text and "Canaries during the run (6)" in text
    await cdp.screenshot(tmp_path / "dashboard-loadrun.png", width=1280)
    await _phone_fits(cdp, tmp_path / "phone-loadrun.png")
    await cdp.viewport(1280, 900)
