"""`llm-monitor demo`: the bundled vLLM mock with a fault schedule, watched by the daemon on SQLite.

Everything runs in this process on 127.0.0.1: the mock, the daemon (probes every second, API,
/metrics), and a small webhook receiver that prints the notifications it gets. At a fifth of the
run the mock starts answering HTTP 503 (as an overloaded or restarting vLLM does); at half of the
run it recovers. The `chat-failing` alert fires on the third failure in a row and resolves on the
first success, so a 75 s demo shows the whole life of an alert.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
from aiohttp import web

from monitor.config import DEFAULT_DB_URL, Settings, parse_settings
from monitor.daemon import Daemon, DaemonSummary
from monitor.mock.app import create_mock_app
from monitor.mock.config import DEFAULT_MODEL, MockConfig
from monitor.store.db import censor_url

# Realistic-looking latencies for a 9B model on one GPU.
DEMO_TTFT_MS = 60.0
DEMO_ITL_MS = 12.0
FAULT_START = 0.2
FAULT_END = 0.5
FAILURES_TO_FIRE = 3
STARTUP_TIMEOUT_S = 30.0


def demo_settings(*, mock_url: str, hook_url: str, db_url: str | None, port: int) -> Settings:
    """The demo's config: what `llm-monitor init` would give, shrunk to one probe and one rule."""
    return parse_settings({
        "storage": {"url": db_url or DEFAULT_DB_URL},
        "targets": [{"name": "glm4", "base_url": mock_url + "/v1", "model": DEFAULT_MODEL, "timeout_s": 10}],
        "probes": [{"name": "chat-hello", "target": "glm4", "messages": [{"role": "user", "content": "你好"}],
                    "max_tokens": 128, "interval_s": 1}],
        "rules": [{"name": "chat-failing", "kind": "consecutive_failures", "count": FAILURES_TO_FIRE,
                   "scope": {"probe": "chat-hello"}, "severity": "critical",
                   "annotations": {"summary": "{value} failures in a row"}}],
        "receivers": [{"name": "demo-webhook", "format": "generic", "url": hook_url}],
        "api": {"port": port},
        "daemon": {"shutdown_grace_s": 5, "absence_eval_interval_s": 5},
    })  # fmt: skip


def _port_free(port: int) -> bool:
    if port == 0:
        return True
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _serve(stack: AsyncExitStack, app: web.Application) -> str:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}"


def _receiver(inbox: asyncio.Queue[dict[str, Any]]) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        await inbox.put(await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    return app


class _Timeline:
    def __init__(self) -> None:
        self._start = time.monotonic()
        self.fired = False
        self.resolved = False
        self.interrupted = False

    def say(self, text: str) -> None:
        print(f"[+{time.monotonic() - self._start:5.1f} s] {text}", flush=True)


async def _fault_schedule(http: aiohttp.ClientSession, mock_url: str, duration_s: float, line: _Timeline) -> None:
    await asyncio.sleep(duration_s * FAULT_START)
    async with http.post(mock_url + "/_mock/config", json={"status": 503}) as resp:
        resp.raise_for_status()
    line.say('fault: the mock answers 503 (POST /_mock/config {"status": 503})')
    await asyncio.sleep(duration_s * (FAULT_END - FAULT_START))
    async with http.post(mock_url + "/_mock/config", json={"reset": True}) as resp:
        resp.raise_for_status()
    line.say("fault cleared: the mock answers normally again")
    await asyncio.sleep(duration_s * (1 - FAULT_END))


async def _print_notifications(inbox: asyncio.Queue[dict[str, Any]], line: _Timeline) -> None:
    while True:
        message = await inbox.get()
        alert = message["alert"]
        if message["status"] == "firing":
            line.fired = True
        else:
            line.resolved = True
        # The rule's summary describes the failure; a resolution is simply the probe succeeding again.
        summary = alert["annotations"].get("summary", "") if message["status"] == "firing" else "the probe succeeds"
        line.say(f"{message['status'].upper():8} {alert['name']} ({alert['probe']}): {summary}, via webhook")


class _Signals:
    """SIGINT/SIGTERM for the demo's whole life, in one handler: one signal is one stop request.

    The daemon gets no handlers of its own here (`install_signals=False`). Otherwise a signal during
    the demo's own startup or teardown would be a KeyboardInterrupt, and the demo's "schedule over"
    stop would add up with the daemon's signal stop to a forced one.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._daemon: Daemon | None = None
        self._serve: asyncio.Task[int] | None = None

    def install(self, stack: AsyncExitStack) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig.name)
            stack.callback(loop.remove_signal_handler, sig)

    def watch(self, daemon: Daemon, serve: asyncio.Task[int]) -> None:
        self._daemon, self._serve = daemon, serve
        if self.received is not None:
            daemon.request_stop(self.received)

    def _on_signal(self, name: str) -> None:
        self.received = self.received or name
        if self._daemon is None or self._serve is None or self._serve.done():
            return  # not started yet (watch() passes it on), or stopped already and tidying up
        self._daemon.request_stop(name)  # a second signal forces, as in `llm-monitor run`


async def _demo(db_url: str | None, duration_s: float, port: int) -> tuple[_Timeline, Daemon]:
    async with AsyncExitStack() as stack:
        signals = _Signals()
        signals.install(stack)
        mock_url = await _serve(stack, create_mock_app(MockConfig(ttft_ms=DEMO_TTFT_MS, itl_ms=DEMO_ITL_MS)))
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        hook_url = await _serve(stack, _receiver(inbox)) + "/hook"
        http = await stack.enter_async_context(aiohttp.ClientSession())
        api_port = port if _port_free(port) else 0
        settings = demo_settings(mock_url=mock_url, hook_url=hook_url, db_url=db_url, port=api_port)
        daemon = Daemon(settings)
        serve = asyncio.create_task(daemon.serve(), name="daemon")
        signals.watch(daemon, serve)
        started = asyncio.create_task(daemon.started.wait())
        await asyncio.wait({serve, started}, timeout=STARTUP_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            started.cancel()
            await serve  # a startup failure raises here, with its one-line message
        line = _Timeline()
        _print_header(daemon, mock_url, settings, duration_s, port, api_port)
        script = asyncio.create_task(_fault_schedule(http, mock_url, duration_s, line))
        printer = asyncio.create_task(_print_notifications(inbox, line))
        try:
            await asyncio.wait({serve, script}, return_when=asyncio.FIRST_COMPLETED)
            if not serve.done() and signals.received is None:  # the schedule ran out, no signal came
                daemon.request_stop("demo finished")
            await serve
            if script.done() and signals.received is None:
                script.result()  # a failed fault switch is an error, not a silent demo
        finally:
            for task in (script, printer):
                task.cancel()
            await asyncio.gather(script, printer, return_exceptions=True)
        line.interrupted = signals.received is not None
        return line, daemon


def _print_header(daemon: Daemon, mock_url: str, settings: Settings, duration_s: float, port: int, bound: int) -> None:
    api = daemon.api_url
    moved = f" (port {port} was taken)" if bound != port else ""
    start, end = duration_s * FAULT_START, duration_s * FAULT_END
    # Lines stay within 80 columns; tests read the label column ("  alerts   ...").
    print(
        "llm-monitor demo: the daemon probes the bundled vLLM mock every second.\n"
        f"Dashboard: {api}/{moved}\n"
        f"  alerts   {api}/api/v1/alerts\n"
        f"  results  {api}/api/v1/results?limit=5\n"
        f"  metrics  {api}/metrics\n"
        f"  health   {api}/healthz and {api}/readyz\n"
        f"  mock     {mock_url}/v1 ({DEFAULT_MODEL})\n"
        f"  database {censor_url(settings.storage.url)}\n"
        f"  schedule healthy; HTTP 503 from +{start:.0f} s to +{end:.0f} s; healthy to +{duration_s:.0f} s\n"
        f"  rule     chat-failing fires after {FAILURES_TO_FIRE} failures in a row, resolves on a success\n"
        "Ctrl-C stops the demo early.",
        flush=True,
    )


def _tally(summary: DaemonSummary | None) -> str:
    """'N probe runs (a ok, b failed, ...)': the parts add up to N."""
    if summary is None:
        return "no probe runs"
    unfinished = summary.runs - summary.ok - summary.failed
    # A run cancelled before it began is counted as cancelled but not as a run.
    cancelled = min(summary.cancelled, unfinished)
    parts = [f"{summary.ok} ok", f"{summary.failed} failed"]
    if cancelled:
        parts.append(f"{cancelled} cancelled at shutdown")
    if unfinished - cancelled:
        parts.append(f"{unfinished - cancelled} errored (see the log)")
    return f"{summary.runs} probe run{'' if summary.runs == 1 else 's'} ({', '.join(parts)})"


def run_demo(*, db_url: str | None, duration_s: float, port: int) -> int:
    """Run the demo for `duration_s`; returns 0 (its failures are on purpose). Startup errors raise."""
    line, daemon = asyncio.run(_demo(db_url, duration_s, port))
    print(f"Done: {_tally(daemon.summary)};")
    if line.fired and line.resolved:
        print("      the alert fired and resolved, and both notifications were delivered.")
    elif line.interrupted:
        print("      the alert did not finish its cycle (interrupted).")
    else:
        print("      the alert did not finish its cycle (try a longer --duration-s).")
    print(
        "Next: llm-monitor init > monitor.yaml   # then point it at your server\n"
        "      llm-monitor run -c monitor.yaml   # the daemon; SIGHUP reloads the file\n"
        "      rules, receivers and the dashboard: see the README"
    )
    return 0
