"""Isolation: a healthy target is measured the same however hostile the targets beside it are.

Hostile servers (huge lines without a newline, a huge JSON body, many tiny SSE events, a trickle, a
gzip bomb, a stall) run in one subprocess and a healthy server in another, so neither shares the
prober's event loop. The probes run through the real `Prober` and one real `ClientSession`,
concurrently, as the daemon runs them. The healthy server sends its first token 50 ms after the
request arrives, so a correct measurement of its TTFT lies in a known window; the bounds are
generous on purpose (a correctness bound, not a benchmark).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from monitor.config import ProbeSettings, Settings, parse_settings
from monitor.meter import MAX_EVENT_BYTES, StreamMeter
from monitor.probes import Prober
from monitor.results import ProbeResult
from monitor.target_http import target_session
from tests.conftest import chat_probe
from tests.mockserver import REPO_ROOT

FIRST_TOKEN_DELAY_S = 0.05
TTFT_BOUNDS_MS = (FIRST_TOKEN_DELAY_S * 1000.0, 500.0)
DEADLINE_SLACK_S = 1.0
HEALTHY_EVERY_S = 0.25
RUN_S = 10.0

_SERVER = textwrap.dedent(
    r"""
    import asyncio, sys, zlib
    from aiohttp import web

    MIB = 1 << 20
    role = sys.argv[1]
    routes = web.RouteTableDef()

    async def send(request, head, body, ctype="text/event-stream", encoding=None, piece=64 * 1024):
        headers = {"Content-Type": ctype}
        if encoding:
            headers["Content-Encoding"] = encoding
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        try:
            await resp.write(head)
            for i in range(0, len(body), piece):
                await resp.write(body[i : i + piece])
        except (ConnectionError, RuntimeError):
            pass  # the client gave up, as it should
        return resp

    EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
    HUGE_LINE = b"a" * (9 * MIB)
    JSON_BODY = b'{"choices":[{"index":0,"message":{"content":"' + b"a" * (7 * MIB) + b'"},"finish_reason":"stop"}]}'
    TINY = b"data: {}\n\n" * (9 * MIB // 10)
    TINY_VARIED = b"".join(b'data: {"n":%d}\n\n' % i for i in range(9 * MIB // 14))
    LINES = b"data: x\n" * (9 * MIB // 8)
    # A valid stream of 7 MiB of reply text: measured in full, then checked.
    BIG_TEXT = b'data: {"choices":[{"index":0,"delta":{"content":"' + b"b" * 4000 + b'"}}]}\n\n'
    BIG_TEXT = BIG_TEXT * (7 * MIB // len(BIG_TEXT)) + b"data: [DONE]\n\n"
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    BOMB = b"".join(packer.compress(b"\0" * MIB) for _ in range(64)) + packer.flush()

    if role == "healthy":
        @routes.post("/healthy/v1/chat/completions")
        async def healthy(request):
            await request.read()
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await asyncio.sleep(float(sys.argv[2]))
            for word in ("hello", " world"):
                await resp.write(b'data: {"choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n' % word.encode())
            await resp.write(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
            return resp
    else:
        @routes.post("/line/v1/chat/completions")
        async def line(request):
            return await send(request, b'data: {"choices":[{"index":0,"delta":{"content":"', HUGE_LINE)

        @routes.post("/json/v1/chat/completions")
        async def json_body(request):
            return await send(request, b"", JSON_BODY, ctype="application/json")

        @routes.post("/tiny/v1/chat/completions")
        async def tiny(request):
            return await send(request, EVENT, TINY)

        @routes.post("/varied/v1/chat/completions")
        async def varied(request):
            return await send(request, EVENT, TINY_VARIED)

        @routes.post("/bigtext/v1/chat/completions")
        async def big_text(request):
            return await send(request, EVENT, BIG_TEXT)

        @routes.post("/lines/v1/chat/completions")
        async def lines(request):
            return await send(request, EVENT, LINES)

        @routes.post("/bomb/v1/chat/completions")
        async def bomb(request):
            return await send(request, b"", BOMB, ctype="application/json", encoding="gzip", piece=16384)

        @routes.post("/trickle/v1/chat/completions")
        async def trickle(request):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            try:
                await resp.write(EVENT)
                while True:  # one byte at a time, never a whole event: only timeout_s can end it
                    await asyncio.sleep(0.05)
                    await resp.write(b"a")
            except (ConnectionError, RuntimeError):
                pass
            return resp

        @routes.post("/stall/v1/chat/completions")
        async def stall(request):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await asyncio.sleep(3600)
            return resp

    async def main():
        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)

# name -> (copies probing back to back, target settings beyond base_url)
HOSTILE: dict[str, tuple[int, dict[str, Any]]] = {
    "line": (2, {"timeout_s": 8}),
    "json": (2, {"timeout_s": 8}),
    "tiny": (3, {"timeout_s": 8}),
    "varied": (2, {"timeout_s": 8}),
    "lines": (2, {"timeout_s": 8}),
    "bigtext": (2, {"timeout_s": 8}),
    "bomb": (2, {"timeout_s": 8}),
    "trickle": (2, {"timeout_s": 3, "chunk_timeout_s": 30}),
    "stall": (1, {"timeout_s": 8, "first_byte_timeout_s": 2}),
}


@asynccontextmanager
async def _server(role: str) -> AsyncIterator[str]:
    """A server subprocess of `role`; yields its root URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SERVER, role, str(FIRST_TOKEN_DELAY_S), cwd=REPO_ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            port = int(await proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        await proc.wait()


def _probe(settings: Settings, name: str) -> ProbeSettings:
    return next(p for p in settings.probes if p.name == name)


async def _lag_sampler(samples: list[float], stop: asyncio.Event) -> None:
    """How late the loop wakes a 10 ms sleep: the time other callbacks held it."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.01)
        samples.append(loop.time() - before - 0.01)


@pytest.mark.timeout(60)
async def test_hostile_targets_do_not_distort_a_healthy_measurement() -> None:
    async with _server("hostile") as hostile_root, _server("healthy") as healthy_root:
        targets = [{"name": "healthy", "base_url": f"{healthy_root}/healthy/v1", "timeout_s": 10}]
        targets += [{"name": n, "base_url": f"{hostile_root}/{n}/v1", **kw} for n, (_, kw) in HOSTILE.items()]
        probes = [chat_probe(name=t["name"], target=t["name"], stream=t["name"] != "json") for t in targets]
        settings = parse_settings({"targets": targets, "probes": probes})
        healthy: list[ProbeResult] = []
        hostile: list[tuple[ProbeResult, float]] = []
        lags: list[float] = []
        stop = asyncio.Event()
        async with target_session(limit=0) as session:  # the daemon's probe session
            prober = Prober(session)

            async def hostile_worker(name: str) -> None:
                while not stop.is_set():
                    started = time.monotonic()
                    result = await prober.run(settings.target(name), _probe(settings, name))
                    hostile.append((result, time.monotonic() - started))

            async def healthy_worker() -> None:
                while not stop.is_set():
                    healthy.append(await prober.run(settings.target("healthy"), _probe(settings, "healthy")))
                    await asyncio.sleep(HEALTHY_EVERY_S)

            async with asyncio.TaskGroup() as tg:
                tg.create_task(_lag_sampler(lags, stop))
                for name, (copies, _) in HOSTILE.items():
                    for _ in range(copies):
                        tg.create_task(hostile_worker(name))
                tg.create_task(healthy_worker())
                await asyncio.sleep(RUN_S)
                stop.set()

    lag = f"loop lag max {max(lags) * 1000:.0f} ms, p50 {sorted(lags)[len(lags) // 2] * 1000:.1f} ms"
    ttfts = [r.measurement.ttft_ms if r.measurement is not None else None for r in healthy]
    overshoot = max(s - settings.target(r.target).timeout_s for r, s in hostile)
    print(f"\nhealthy: {len(healthy)} runs, TTFT ms {ttfts}; {lag}; worst deadline overshoot {overshoot:.2f} s")
    assert all(r.ok for r in healthy), [(r.error_kind, r.error_detail) for r in healthy]
    # One run every 0.25 s plus ~0.1 s each: about 25 in 10 s. Fewer means the loop held it up.
    assert len(healthy) >= 15, (len(healthy), lag)
    low, high = TTFT_BOUNDS_MS
    assert all(t is not None and low <= t <= high for t in ttfts), (ttfts, lag)
    # Every hostile request ended within its deadlines, classified.
    for result, elapsed_s in hostile:
        target = settings.target(result.target)
        assert result.error_kind is not None or result.target == "bigtext", (result.target, result.measurement)
        assert elapsed_s <= target.timeout_s + DEADLINE_SLACK_S, (result.target, elapsed_s, result.error_detail, lag)
    for name, phase, limit_s in (("trickle", "total", 3.0), ("stall", "first_byte", 2.0)):
        timed_out = [(r, s) for r, s in hostile if r.target == name]
        assert timed_out and all(r.timeout_phase == phase for r, _ in timed_out), [r.error_detail for r, _ in timed_out]
        assert all(s <= limit_s + DEADLINE_SLACK_S for _, s in timed_out), [s for _, s in timed_out]
    print(json.dumps({r.target: r.error_kind for r, _ in hostile}))


# --- the meter's bound on one JSON document ---------------------------------------------------------------


def _content(i: int) -> bytes:
    return b'data: {"choices":[{"index":0,"delta":{"content":"t%d"}}]}\n\n' % i


@pytest.mark.parametrize("read_bytes", [7, 4096, 1 << 22])
def test_an_oversized_event_is_dropped_unparsed_and_the_stream_goes_on(read_bytes: int) -> None:
    huge = b'data: {"choices":[{"index":0,"delta":{"content":"' + b"a" * MAX_EVENT_BYTES + b'"}}]}\n\n'
    body = _content(0) + _content(1) + huge + _content(2) + b"data: [DONE]\n\n"
    meter = StreamMeter("chat", stream=True, start_s=0.0)
    for i in range(0, len(body), read_bytes):
        meter.feed(body[i : i + read_bytes], 1.0)
    m = meter.finish(2.0)
    assert m.error_kind == "bad_response" and m.error_detail == (
        f"SSE event 3 exceeds {MAX_EVENT_BYTES} bytes; dropped unparsed"
    )
    assert (m.text, m.chunk_count, m.done_seen) == ("t0t1t2", 4, True)


def test_a_line_without_end_is_dropped_once_past_the_cap() -> None:
    meter = StreamMeter("chat", stream=True, start_s=0.0)
    meter.feed(_content(0), 1.0)
    for _ in range(4):
        meter.feed(b"x" * (MAX_EVENT_BYTES // 2), 1.0)
    m = meter.finish(2.0)
    assert m.error_detail == f"SSE event 2 exceeds {MAX_EVENT_BYTES} bytes; dropped unparsed" and m.text == "t0"


@pytest.mark.parametrize("stream", [True, False])
def test_a_json_body_past_the_cap_is_not_parsed(stream: bool) -> None:
    # stream=True: a server that ignored "stream" and sent one JSON object.
    body = b'{"choices":[{"index":0,"message":{"content":"' + b"a" * MAX_EVENT_BYTES + b'"},"finish_reason":"stop"}]}'
    meter = StreamMeter("chat", stream=stream, start_s=0.0)
    for i in range(0, len(body), 65536):
        meter.feed(body[i : i + 65536], 1.0)
    m = meter.finish(2.0)
    assert m.error_detail == f"response body of {len(body)} bytes exceeds {MAX_EVENT_BYTES} bytes"
    small = StreamMeter("chat", stream=stream, start_s=0.0)
    small.feed(body[:45] + b'ok"},"finish_reason":"stop"}]}', 1.0)
    assert small.finish(2.0).text == "ok"
