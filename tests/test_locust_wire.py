"""The Locust users against servers that behave like real ones in the wild, run headless for real.

* a server that validates ``X-Request-Id`` as a UUID (llama-cpp-python answers 400 otherwise) and
  closes a kept-alive connection when the next request arrives on it, before any response byte
  (llama.cpp's llama-server closes idle keep-alive connections; the client's reuse races it);
* a server that answers 429 and 400 with a JSON error body quoting the API key.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from monitor.loadtest.recorder import EventTail, RunData
from tests.mockserver import REPO_ROOT, ReuseClosingServer, serve_raw

pytestmark = pytest.mark.load

KEY_ENV = "LLMMON_WIRE_KEY"
KEY = f"sk-wire-{uuid.uuid4().hex}"

USERS = 2


async def _locust(root: str, out: Path, *args: str) -> tuple[int, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT), KEY_ENV: KEY}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "locust", "-f", str(REPO_ROOT / "locustfiles" / "llm.py"), "--headless",
        "-u", str(USERS), "-r", str(USERS), "-t", "3s", "--host", root, "--llm-out", str(out),
        "--llm-api-key-env", KEY_ENV,
        *args, cwd=REPO_ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        stdout, stderr = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, (stdout + stderr).decode(errors="replace")


def _events(path: Path) -> RunData:
    data = RunData()
    for line in EventTail(path).read_new():
        data.apply(line)
    assert data.summary is not None
    return data


# --- A and B: request ids, and connections closed before the reply -------------------------------------------


@pytest.fixture(name="reuse_closing")
async def fix_reuse_closing() -> AsyncIterator[tuple[ReuseClosingServer, str]]:
    server = ReuseClosingServer()
    async with serve_raw(server.handle) as root:
        yield server, root


@pytest.mark.timeout(90)
async def test_connections_closed_before_the_reply_are_retried_once_and_counted(
    reuse_closing: tuple[ReuseClosingServer, str], tmp_path: Path
) -> None:
    server, root = reuse_closing
    out = tmp_path / "events.jsonl"
    code, output = await _locust(root, out, "--llm-endpoint", "chat", "--exit-code-on-error", "1")
    data = _events(out)
    window = data.window()
    assert server.bad_ids == []  # every request id was a UUID
    assert window.requests > 5 and window.failures == 0, (dict(window.errors), output[-3000:])
    assert code == 0, output[-3000:]
    assert server.closed_unanswered > 0  # the server did close reused connections on the users
    assert data.summary is not None
    # Each closed connection is one reconnect, except that the run's stop may cut a retry of each user.
    assert server.closed_unanswered - USERS <= data.summary["reconnects"] <= server.closed_unanswered


@pytest.mark.timeout(90)
async def test_loadtest_reports_reconnects_in_its_summary(
    reuse_closing: tuple[ReuseClosingServer, str], tmp_path: Path
) -> None:
    server, root = reuse_closing
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "loadtest", "--base-url", root + "/v1", "--endpoint", "chat",
        "--users", str(USERS), "--duration", "3s", "--db", f"sqlite+aiosqlite:///{tmp_path / 'load.db'}", "--json",
        # No --slo: against this instant server the generator is the bottleneck, and the gate would refuse (exit 3).
        cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(80):
        stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode(errors="replace")[-3000:]
    summary = json.loads(stdout)["summary"]
    assert summary["metrics"]["error_rate"] == 0
    assert server.closed_unanswered > 0, summary
    assert server.closed_unanswered - USERS <= summary["reconnects"] <= server.closed_unanswered, summary


@pytest.mark.timeout(90)
async def test_a_connection_that_breaks_after_the_reply_began_is_a_stream_error(
    reuse_closing: tuple[ReuseClosingServer, str], tmp_path: Path
) -> None:
    server, root = reuse_closing
    out = tmp_path / "events.jsonl"
    await _locust(root, out, "--llm-endpoint", "both", "--exit-code-on-error", "0")
    data = _events(out)
    errors = data.window().errors
    assert set(errors) == {"stream_error"} and errors["stream_error"] > 0, dict(errors)
    entries = {e["name"]: e for e in data.summary["locust"]} if data.summary else {}
    assert entries["E2E chat"]["failures"] == 0 and entries["E2E completion"]["failures"] == errors["stream_error"]


# --- C: failures carry the server's status and message, without the key ----------------------------------------


def _refusing_routes() -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.post("/v1/chat/completions")
    async def rate_limited(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        body = b'{"error":{"message":"rate limited for %s, retry later \\ud800","type":"rate_limit"}}' % auth.encode()
        return web.Response(body=body, status=429, content_type="application/json")

    @routes.post("/v1/completions")
    async def bad_request(request: web.Request) -> web.Response:
        message = {"object": "error", "message": "max_tokens is too large", "type": "BadRequestError", "code": 400}
        return web.json_response(message, status=400)

    return routes


@pytest.mark.timeout(90)
async def test_http_failures_carry_the_server_message_without_the_key(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    app = web.Application()
    app.add_routes(_refusing_routes())
    server = await aiohttp_server(app)
    out = tmp_path / "events.jsonl"
    code, output = await _locust(str(server.make_url("")).rstrip("/"), out, "--exit-code-on-error", "0")
    assert code == 0, output[-3000:]
    data = _events(out)
    assert data.summary is not None
    samples = data.summary["error_samples"]["http_error"]
    assert "HTTP 429: rate limited for Bearer [redacted], retry later \ufffd" in samples, samples
    assert "HTTP 400: max_tokens is too large" in samples, samples
    failures = data.summary["locust_errors"]
    assert any(k.startswith("E2E chat: http_error: HTTP 429: rate limited for Bearer [redacted]") for k in failures)
    assert any(k.startswith("E2E completion: http_error: HTTP 400: max_tokens is too large") for k in failures)
    for where, text in (("the event stream", out.read_text(encoding="utf-8")), ("the output", output)):
        assert KEY not in text and KEY[:14] not in text, where
    assert json.loads(out.read_text(encoding="utf-8").splitlines()[-1])["type"] == "summary"


def _redirect_and_huge_routes(hits: list[str]) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.post("/v1/chat/completions")
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    @routes.route("*", "/elsewhere")
    async def elsewhere(request: web.Request) -> web.Response:
        hits.append(request.method)
        return web.json_response({"choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}]})

    @routes.post("/v1/completions")
    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        event = b'data: {"choices":[{"index":0,"text":"' + b"a" * 4000 + b'","finish_reason":null}]}\n\n'
        try:
            for _ in range(1000):  # 4 MB
                await resp.write(event)
        except (ConnectionError, RuntimeError):
            pass  # the user hung up
        return resp

    return routes


@pytest.mark.timeout(90)
async def test_redirects_are_failures_and_bodies_are_capped(aiohttp_server: AiohttpServer, tmp_path: Path) -> None:
    hits: list[str] = []
    app = web.Application()
    app.add_routes(_redirect_and_huge_routes(hits))
    server = await aiohttp_server(app)
    out = tmp_path / "events.jsonl"
    root = str(server.make_url("")).rstrip("/")
    code, output = await _locust(root, out, "--exit-code-on-error", "0", "--llm-max-body-bytes", "1048576")
    assert code == 0, output[-3000:]
    data = _events(out)
    assert data.summary is not None
    samples = data.summary["error_samples"]
    assert samples["http_error"] == ["HTTP 302: redirect to /elsewhere"] and hits == []
    assert samples["body_too_large"] == ["reply body exceeds max_body_bytes=1048576"]
    assert set(data.window().errors) == {"http_error", "body_too_large"}
