"""Hostile servers on the wire: what they send must never break a result, leak the key or exhaust memory.

Each test runs the real `Prober` (or `python -m monitor probe`) against a small aiohttp.web server on
127.0.0.1 that misbehaves one way: lone surrogates and NUL in replies, the Authorization value quoted
back in odd places, huge or decompression-bomb bodies, redirects, an unresolvable host.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import textwrap
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from hypothesis import given, strategies as st
from pytest_aiohttp import AiohttpServer

from monitor.config import parse_settings
from monitor.envelope import http_error_detail
from monitor.probes import Prober
from monitor.results import ProbeResult
from monitor.store.db import connect, ensure_schema
from monitor.store.repo import Store
from monitor.store.writer import ResultWriter
from monitor.untrusted import Untrusted
from tests.conftest import chat_probe, completion_probe
from tests.mockserver import REPO_ROOT

KEY = f"sk-hostile-{uuid.uuid4().hex}"
MIB = 1024 * 1024


@pytest.fixture(name="session")
async def fix_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _serve(aiohttp_server: AiohttpServer, routes: web.RouteTableDef) -> str:
    """The server's root URL (no trailing slash)."""
    app = web.Application()
    app.add_routes(routes)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def _probe(
    session: aiohttp.ClientSession, base_url: str, probe: dict[str, Any], api_key: str | None = None, **target: Any
) -> ProbeResult:
    settings = parse_settings({"targets": [{"name": "mock", "base_url": base_url, **target}], "probes": [probe]})
    return await Prober(session).run(settings.targets[0], settings.probes[0], api_key)


def _sse(*events: bytes) -> bytes:
    return b"".join(b"data: " + e + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def _raw_route(routes: web.RouteTableDef, path: str, body: bytes, status: int = 200, ctype: str = "") -> None:
    """A POST route answering `body` as written: JSON escapes such as \\ud800 reach the client untouched."""
    ctype = ctype or ("text/event-stream" if body.startswith(b"data:") else "application/json")

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, status=status, headers={"Content-Type": ctype})

    routes.post(path)(handler)


# --- 1. lone surrogates and NUL ---------------------------------------------------------------------------

# Two content events of one layout (the meter's fast path reads the second), then a finish event.
SURROGATE_STREAM = _sse(
    b'{"choices":[{"index":0,"delta":{"content":"lone \\ud800 and nul \\u0000 here"},"finish_reason":null}]}',
    b'{"choices":[{"index":0,"delta":{"content":" then \\udfff"},"finish_reason":null}]}',
    b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop\\udfff","stop_reason":"\\ud800\\u0000"}]}',
)
SURROGATE_ROUTES: dict[str, tuple[bytes, int]] = {
    "/reply/v1/chat/completions": (SURROGATE_STREAM, 200),
    "/json/v1/completions": (b'{"choices":[{"index":0,"text":"a\\ud800b\\u0000c","finish_reason":"stop"}]}', 200),
    "/error/v1/chat/completions": (b'{"error":{"message":"bad input \\ud800 with \\u0000 nul"}}', 400),
    "/event/v1/chat/completions": (_sse(b'{"error":{"message":"engine died \\udfff\\u0000"}}'), 200),
}


def _surrogate_routes() -> web.RouteTableDef:
    routes = web.RouteTableDef()
    for path, (body, status) in SURROGATE_ROUTES.items():
        _raw_route(routes, path, body, status)
    return routes


def _surrogate_config(root: str) -> dict[str, Any]:
    targets = [{"name": name, "base_url": f"{root}/{name}/v1"} for name in ("reply", "json", "error", "event")]
    probes = [
        chat_probe(name="reply", target="reply"),
        completion_probe(name="json", target="json", stream=False),
        chat_probe(name="error", target="error"),
        chat_probe(name="event", target="event"),
    ]
    return {"targets": targets, "probes": probes}


def _no_bad_chars(text: str | None) -> bool:
    return text is None or not any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in text)


@pytest.mark.timeout(90)
async def test_lone_surrogates_and_nul_are_stored_on_both_backends(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession, db_url: str
) -> None:
    root = await _serve(aiohttp_server, _surrogate_routes())
    settings = parse_settings(_surrogate_config(root))
    prober = Prober(session)
    results = [await prober.run(settings.target(p.target), p) for p in settings.probes]
    by_name = {r.probe: r for r in results}
    for r in results:
        m = r.measurement
        assert r.sanitised, r.probe
        assert _no_bad_chars(r.error_detail), r.probe
        assert m is None or (_no_bad_chars(m.text) and _no_bad_chars(m.finish_reason)), r.probe
        json.dumps(r.to_json(), ensure_ascii=False).encode()  # printable and storable as UTF-8
    reply = by_name["reply"].measurement
    assert reply is not None and reply.text == "lone \ufffd and nul \ufffd here then \ufffd"
    assert reply.finish_reason == "stop\ufffd" and reply.stop_reason == "\ufffd\ufffd" and reply.sanitised
    assert by_name["reply"].error_kind is None
    json_m = by_name["json"].measurement
    assert json_m is not None and json_m.text == "a\ufffdb\ufffdc"
    assert by_name["error"].error_detail == "HTTP 400: bad input \ufffd with \ufffd nul"
    assert by_name["event"].error_kind == "stream_error" and by_name["event"].error_detail == "engine died \ufffd\ufffd"

    engine = await connect(db_url)
    try:
        await ensure_schema(engine)
        store = Store.from_engine(engine)
        writer = ResultWriter(store, retry_initial_s=0.05, retry_max_s=0.1)
        task = asyncio.create_task(writer.run())
        for r in results:
            await writer.put(r)
        await writer.close()
        await asyncio.wait_for(task, 30)
        assert (writer.stored, writer.rejected, writer.dropped) == (len(results), 0, 0)
        stored = {s.probe: s for s in await store.recent_results()}
    finally:
        await engine.dispose()
    assert stored["reply"].text_sample == "lone \ufffd and nul \ufffd here then \ufffd"
    assert stored["reply"].finish_reason == "stop\ufffd"
    assert stored["error"].error_detail == "HTTP 400: bad input \ufffd with \ufffd nul"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("as_json", [False, True])
async def test_probe_command_prints_every_result_despite_lone_surrogates(
    aiohttp_server: AiohttpServer, tmp_path: Path, as_json: bool
) -> None:
    root = await _serve(aiohttp_server, _surrogate_routes())
    config = tmp_path / "monitor.yaml"
    config.write_text(
        yaml.safe_dump({"storage": {"url": f"sqlite:///{tmp_path / 'p.db'}"}, **_surrogate_config(root)}), "utf-8"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "probe", *(["--json"] if as_json else []), "-c", str(config),
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(80):
        stdout, stderr = await proc.communicate()
    assert proc.returncode in (0, 1), stderr.decode(errors="replace")[-2000:]  # 1: some probes failed; never 70
    out = stdout.decode()
    if as_json:
        printed = {r["probe"]: r for r in json.loads(out)}
        assert set(printed) == {"reply", "json", "error", "event"}
        assert printed["reply"]["text"] == "lone \ufffd and nul \ufffd here then \ufffd"
        assert all(r["sanitised"] for r in printed.values())
    else:
        for name in ("reply", "json", "error", "event"):
            assert name in out, out


# Rich markup and terminal escapes in the reply and in finish_reason: printed as text, never obeyed.
_MARKUP_STREAM = _sse(
    b'{"choices":[{"index":0,"delta":{"content":"[bold]b[/bold] \\u001b]52;c;eA==\\u0007 [link=http://e]y[/link]"},'
    b'"finish_reason":null}]}',
    b'{"choices":[{"index":0,"delta":{},"finish_reason":"[red]stop[/red]"}]}',
)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("columns", ["80", "200"])  # the stacked layout, and the table with its reply column
async def test_probe_command_prints_their_markup_and_escapes_inert(
    aiohttp_server: AiohttpServer, tmp_path: Path, columns: str
) -> None:
    routes = web.RouteTableDef()
    _raw_route(routes, "/v1/chat/completions", _MARKUP_STREAM)
    root = await _serve(aiohttp_server, routes)
    config = tmp_path / "monitor.yaml"
    settings = {"targets": [{"name": "t", "base_url": root + "/v1"}], "probes": [chat_probe(name="p", target="t")]}
    config.write_text(yaml.safe_dump({"storage": {"url": f"sqlite:///{tmp_path / 'p.db'}"}, **settings}), "utf-8")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT), "COLUMNS": columns}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "probe", "-c", str(config),
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(80):
        stdout, stderr = await proc.communicate()
    out = stdout.decode()
    assert proc.returncode in (0, 1), stderr.decode(errors="replace")[-2000:]
    assert "\x1b" not in out and "\x07" not in out, repr(out)
    assert "[bold]b[/bold] \ufffd]52;c;eA==\ufffd [link=http://e]y[/link]" in out, out
    assert "[red]stop[/red]" in out, out


# --- 2. the API key in fields that were not redacted, and redaction before the cap ---------------------------


def _echo_routes() -> web.RouteTableDef:
    routes = web.RouteTableDef()

    def key_of(request: web.Request) -> str:
        return request.headers.get("Authorization", "").removeprefix("Bearer ")

    @routes.post("/reasons/v1/chat/completions")
    async def reasons(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        events = [
            {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": f"stop ({auth})", "stop_reason": key_of(request)}]},
        ]
        body = _sse(*(json.dumps(e).encode() for e in events))
        return web.Response(body=body, headers={"Content-Type": "text/event-stream"})

    @routes.post("/long/v1/chat/completions")
    async def long_error(request: web.Request) -> web.Response:
        # The key straddles the 300-character cap: capping first would keep its first characters.
        message = "x" * 250 + f" denied for {request.headers.get('Authorization', '')}"
        return web.json_response({"error": {"message": message}}, status=403)

    @routes.post("/event/v1/chat/completions")
    async def long_event(request: web.Request) -> web.Response:
        message = "y" * 260 + f" {key_of(request)} is over quota"
        return web.Response(body=_sse(json.dumps({"error": {"message": message}}).encode()),
                            headers={"Content-Type": "text/event-stream"})  # fmt: skip

    @routes.post("/malformed/v1/chat/completions")
    async def malformed(request: web.Request) -> web.Response:
        # The meter quotes the first 80 bytes of a malformed event: the key starts inside them.
        return web.Response(body=b"data: {" + b"z" * 60 + key_of(request).encode() + b"\n\n",
                            headers={"Content-Type": "text/event-stream"})  # fmt: skip

    @routes.post("/redirect/v1/chat/completions")
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/login?token={key_of(request)}")

    return routes


@pytest.mark.parametrize("where", ["reasons", "long", "event", "malformed", "redirect"])
async def test_the_key_is_redacted_everywhere_and_before_any_cap(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession, where: str
) -> None:
    root = await _serve(aiohttp_server, _echo_routes())
    r = await _probe(session, f"{root}/{where}/v1", chat_probe(), api_key=KEY)
    shown = json.dumps(r.to_json(), ensure_ascii=False)
    assert KEY[:16] not in shown, shown  # not the key, nor the first characters of it that a cap would keep
    assert "[redacted]" in shown, shown
    if where == "reasons":
        m = r.measurement
        assert m is not None and m.finish_reason == "stop (Bearer [redacted])" and m.stop_reason == "[redacted]"
    if where == "long":
        assert r.error_detail is not None and r.error_detail.endswith("denied for Bearer [redacted]")


# --- 3. unbounded bodies ---------------------------------------------------------------------------------------


def _gzip_bomb(decoded_bytes: int) -> bytes:
    """A gzip member of `decoded_bytes` zeros (about 1000:1)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(MIB)
    parts = [packer.compress(block) for _ in range(decoded_bytes // MIB)]
    return b"".join(parts) + packer.flush()


def _big_routes(bomb: bytes) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.post("/big/v1/chat/completions")
    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(b'{"choices":[{"index":0,"message":{"content":"')
        try:
            for _ in range(50):  # 50 MiB of reply
                await resp.write(b"a" * MIB)
            await resp.write(b'"},"finish_reason":"stop"}]}')
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return resp

    @routes.post("/stream/v1/chat/completions")
    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        event = b'data: {"choices":[{"index":0,"delta":{"content":"' + b"b" * 4000 + b'"}}]}\n\n'
        try:
            for _ in range(10_000):  # 40 MB of events
                await resp.write(event)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    @routes.post("/bomb/v1/chat/completions")
    async def gzip_bomb(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        await resp.prepare(request)
        try:
            for i in range(0, len(bomb), 16384):
                await resp.write(bomb[i : i + 16384])
        except (ConnectionError, RuntimeError):
            pass
        return resp

    return routes


@pytest.mark.parametrize("where", ["big", "stream", "bomb"])
async def test_a_body_past_max_body_bytes_is_body_too_large(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession, where: str
) -> None:
    root = await _serve(aiohttp_server, _big_routes(_gzip_bomb(64 * MIB)))
    r = await _probe(session, f"{root}/{where}/v1", chat_probe(stream=where == "stream"), max_body_bytes=MIB)
    assert r.error_kind == "body_too_large", (r.error_kind, r.error_detail)
    assert r.http_status == 200 and r.error_detail == "reply body exceeds max_body_bytes=1048576"


def test_max_body_bytes_defaults_to_8_mib() -> None:
    settings = parse_settings({"targets": [{"name": "t", "base_url": "http://127.0.0.1:1/v1"}]})
    assert settings.targets[0].max_body_bytes == 8 * MIB


_RSS_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    import aiohttp, psutil
    from monitor.probes import Prober
    from monitor.config import parse_settings

    async def main(root):
        raw = {"targets": [{"name": w, "base_url": f"{root}/{w}/v1"} for w in ("big", "bomb")],
               "probes": [{"name": w, "target": w, "endpoint": "chat", "stream": False,
                           "messages": [{"role": "user", "content": "hi"}]} for w in ("big", "bomb")]}
        settings = parse_settings(raw)
        async with aiohttp.ClientSession() as session:
            prober = Prober(session)
            before = psutil.Process().memory_full_info().uss
            results = await asyncio.gather(*(prober.run(settings.target(p.target), p) for p in settings.probes))
        return before, [r.error_kind for r in results]

    before, kinds = asyncio.run(main(sys.argv[1]))
    # Peak resident set of this process (VmHWM), as psutil reads it from /proc on Linux.
    peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"kinds": kinds, "peak_rss": peak, "rss_before": psutil.Process().memory_info().rss,
                      "uss_before": before}))
    """
)


@pytest.mark.timeout(120)
async def test_memory_stays_bounded_for_a_huge_reply_and_a_gzip_bomb(aiohttp_server: AiohttpServer) -> None:
    """Two probes with the default 8 MiB cap: a 50 MiB reply and a gzip bomb of 256 MiB (256 kB on the wire)."""
    root = await _serve(aiohttp_server, _big_routes(_gzip_bomb(256 * MIB)))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _RSS_SCRIPT, root, cwd=REPO_ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(110):
        stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    report = json.loads(stdout)
    assert report["kinds"] == ["body_too_large", "body_too_large"], report
    # An interpreter with aiohttp and the settings loaded is about 50 MB; two capped bodies add little.
    assert report["peak_rss"] < 128 * MIB, report  # 57 MiB measured; 819 MiB before the cap


# --- 5. redirects, 9. clear one-line messages ----------------------------------------------------------------


def _redirect_routes(hits: list[str]) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.post("/moved/v1/chat/completions")
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    @routes.route("*", "/elsewhere")
    async def elsewhere(request: web.Request) -> web.Response:
        hits.append(request.method)
        reply = {"choices": [{"index": 0, "message": {"content": "hello"}, "finish_reason": "stop"}]}
        return web.json_response(reply)

    @routes.post("/loop/v1/chat/completions")
    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(str(request.url))

    return routes


async def test_a_redirect_is_not_followed_but_reported(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    hits: list[str] = []
    root = await _serve(aiohttp_server, _redirect_routes(hits))
    r = await _probe(session, f"{root}/moved/v1", chat_probe(stream=False))
    assert (r.error_kind, r.http_status, r.error_detail) == ("http_error", 302, "HTTP 302: redirect to /elsewhere")
    assert not r.ok and hits == []  # the POST did not become a GET that looked healthy
    loop = await _probe(session, f"{root}/loop/v1", chat_probe())
    assert loop.error_kind == "http_error" and loop.http_status == 307
    assert loop.error_detail == f"HTTP 307: redirect to {root}/loop/v1/chat/completions"


async def test_an_unresolvable_host_says_so_in_one_line(session: aiohttp.ClientSession) -> None:
    r = await _probe(session, "http://nonexistent.invalid/v1", chat_probe(), connect_timeout_s=5, timeout_s=10)
    assert r.error_kind == "connect_error"
    assert r.error_detail is not None and r.error_detail.startswith("cannot resolve host 'nonexistent.invalid'")
    assert "Unknown error" not in r.error_detail and "\n" not in r.error_detail


# --- A. the request id every server accepts ---------------------------------------------------------------------


def _uuid_checking_routes(seen: list[str]) -> web.RouteTableDef:
    """Like llama-cpp-python's server: an X-Request-Id that is not a UUID gets a 400 with an empty body."""
    routes = web.RouteTableDef()

    @routes.post("/v1/chat/completions")
    async def chat(request: web.Request) -> web.Response:
        rid = request.headers.get("X-Request-Id", "")
        seen.append(rid)
        try:
            uuid.UUID(rid)
        except ValueError:
            return web.Response(status=400)
        reply = {"choices": [{"index": 0, "message": {"content": "hello"}, "finish_reason": "stop"}]}
        return web.json_response(reply)

    return routes


async def test_probes_send_a_uuid_request_id(aiohttp_server: AiohttpServer, session: aiohttp.ClientSession) -> None:
    seen: list[str] = []
    root = await _serve(aiohttp_server, _uuid_checking_routes(seen))
    results = [await _probe(session, f"{root}/v1", chat_probe(stream=False)) for _ in range(2)]
    assert all(r.ok for r in results), [r.error_detail for r in results]
    assert len(set(seen)) == 2 and all(uuid.UUID(rid).version == 4 for rid in seen)


def test_untrusted_text_is_storable_and_redacted_before_any_cut() -> None:
    u = Untrusted(KEY)
    assert u.text("plain") == "plain" and not u.sanitised
    assert u.text("a\ud800b\x00c\udfff") == "a\ufffdb\ufffdc\ufffd" and u.sanitised
    basic = base64.b64encode(KEY.encode()).decode()
    assert Untrusted(KEY).text(f"k={KEY} b={basic}") == "k=[redacted] b=[redacted]"
    assert Untrusted(KEY).line("x" * 295 + KEY) == "x" * 295 + "[red…"
    assert Untrusted(KEY).preview(b"y" * 70 + KEY.encode(), 80) == "y" * 70 + "[redacted]"
    assert Untrusted().decode(b"ok \xff") == "ok \ufffd"
    assert http_error_detail(400, b'{"error":{"message":"bad \\ud800"}}') == "HTTP 400: bad \ufffd"


def test_untrusted_text_disarms_terminal_control_characters() -> None:
    u = Untrusted()
    assert u.text("tab\tnew\nline\r\n你好 😊") == "tab\tnew\nline\r\n你好 😊" and not u.sanitised
    # ESC (an OSC 52 clipboard write, a colour), BEL, backspace, DEL and the C1 CSI: none may reach a terminal.
    assert (
        u.text("\x1b]52;c;eA==\x07 \x1b[31m \x08\x7f \x9b2J")
        == "\ufffd]52;c;eA==\ufffd \ufffd[31m \ufffd\ufffd \ufffd2J"
    )
    assert u.sanitised


_UNSAFE_CHARS = frozenset(chr(c) for c in (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0)))


@given(st.text(alphabet=st.characters(codec=None), max_size=40))
def test_untrusted_text_keeps_every_safe_character_in_place(value: str) -> None:
    u = Untrusted()
    out = u.text(value)
    out.encode("utf-8")  # no lone surrogate survives
    assert len(out) == len(value)
    for before, after in zip(value, out, strict=True):
        unsafe = before in _UNSAFE_CHARS or "\ud800" <= before <= "\udfff"
        assert after == ("\ufffd" if unsafe else before)
    assert u.sanitised == any(a != b for a, b in zip(value, out, strict=True))
