"""Security, end to end: secrets never leak, writes need the token, hostile output stays inert, signatures verify.

The daemon runs for real (in this loop, or as a process) against real upstreams on 127.0.0.1: the
mock with `api_key` set, and a small hostile OpenAI-compatible server that answers with HTML and
JavaScript. Everything the daemon exposes or writes is then searched: every table, the SQLite
files (WAL included), the logs at debug level, /metrics, the JSON API, the dashboard pages,
every webhook request (body, headers, query) and `probe --json`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.engine import make_url

from monitor.alerts.signing import verify_signature
from monitor.api import check_bind
from monitor.config import Settings, load_settings, parse_settings, resolve_keys
from monitor.daemon import Daemon
from monitor.errors import ConfigError
from monitor.probes import Prober
from monitor.store.db import connect
from monitor.store.schema import metadata
from tests.conftest import chat_probe, completion_probe
from tests.mockserver import REPO_ROOT, MockProcess
from tests.receivers import ReceivedRequest, WebhookReceiver
from tests.test_daemon import daemon_config, run_daemon_in_task, wait_for

CANARY = f"sk-CANARY-{uuid.uuid4()}"
TOKEN = f"api-token-{uuid.uuid4().hex}"
SIGNING_SECRET = f"whsec-{uuid.uuid4().hex}"
KEY_ENV, TOKEN_ENV, SECRET_ENV = "LLMMON_TEST_KEY", "LLMMON_TEST_TOKEN", "LLMMON_TEST_SIGNING"
CHAT_FORMATS = ("slack", "feishu", "dingtalk", "wecom")
HOSTILE = (
    "<script>alert(1)</script><img src=x onerror=alert(2)> [click](http://evil.example) <!channel> "
    "<http://evil.example|bank> `code` *bold*"
)


def _forms(secret: str) -> tuple[str, ...]:
    """The secret as it could leak: plain, base64 (Basic auth), URL-safe base64."""
    raw = secret.encode()
    return secret, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()


def _assert_absent(haystack: str | bytes, where: str, secrets: tuple[str, ...] = (CANARY, TOKEN)) -> None:
    data = haystack if isinstance(haystack, bytes) else haystack.encode("utf-8", "surrogatepass")
    for secret in secrets:
        for form in _forms(secret):
            assert form.encode() not in data, f"{form[:12]}... found in {where}"


def _receivers(hook: WebhookReceiver, formats: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {"name": f"to-{fmt}", "format": fmt, "url": f"{hook.url}/{fmt}", "secret_env": SECRET_ENV} for fmt in formats
    ]


async def _dump_tables(db_url: str) -> str:
    """Every row of every table of the schema, as text."""
    engine = await connect(db_url)
    try:
        out = []
        async with engine.connect() as conn:
            for table in metadata.sorted_tables:
                rows = (await conn.execute(text(f'select * from "{table.name}"'))).all()
                out.append(f"{table.name}: {rows!r}")
        return "\n".join(out)
    finally:
        await engine.dispose()


def _sqlite_files(db_url: str) -> dict[str, bytes]:
    path = Path(str(make_url(db_url).database))
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return {p.name: p.read_bytes() for p in files if p.exists()}


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, str, dict[str, str]]:
    async with http.get(url) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


def _request_text(r: ReceivedRequest) -> str:
    return f"{r.method} {r.path} {r.query} {dict(r.headers)} " + r.body.decode("utf-8", "replace")


# --- the API key ---------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_api_key_from_the_environment_appears_nowhere(
    mock: MockProcess, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    mock.configure(api_key=CANARY)  # the mock now answers 401 unless it gets the key
    for name, value in ((KEY_ENV, CANARY), (TOKEN_ENV, TOKEN), (SECRET_ENV, SIGNING_SECRET)):
        monkeypatch.setenv(name, value)
    async with WebhookReceiver() as hook:
        raw = daemon_config(
            mock.base_url, db_url, chat_probe(interval_s=0.5, max_tokens=64),
            # Fails its check every time: an alert fires and notifications go out in every format.
            completion_probe(interval_s=0.5, max_tokens=8, expect={"contains": "never in the reply"}),
            rules=[{"name": "completion-failing", "kind": "consecutive_failures", "count": 2,
                    "scope": {"probe": "completion"}}],
            receivers=_receivers(hook, ("generic", "alertmanager", *CHAT_FORMATS)),
            api={"port": 0, "token_env": TOKEN_ENV},
        )  # fmt: skip
        raw["targets"][0]["api_key_env"] = KEY_ENV
        config = tmp_path / "monitor.yaml"
        config.write_text(yaml.safe_dump(raw), encoding="utf-8")
        settings = load_settings(config)
        assert settings.api_key("mock") == CANARY
        async with run_daemon_in_task(settings, config_path=config) as daemon, aiohttp.ClientSession() as http:
            api = str(daemon.api_url)
            await wait_for(lambda: len(hook.delivered()) >= 6, timeout_s=30, what="notifications in six formats")
            await daemon.reload()  # the reload path logs too
            pages = ["/metrics", "/api/v1/results?limit=1000", "/api/v1/alerts", "/api/v1/silences", "/readyz", "/",
                     "/alerts", "/probes/mock/chat", "/probes/mock/completion", "/loadruns", "/api/v1/overview",
                     "/api/v1/probes/mock/chat"]  # fmt: skip
            seen = {}
            for page in pages:
                status, body, headers = await _get(http, api + page)
                assert status == 200, (page, body[:300])
                seen[page] = body + json.dumps(headers)
                if page.startswith("/api/v1/results"):
                    results = json.loads(body)
            assert {r["probe"] for r in results if r["ok"]} == {"chat"}  # the key was sent: the mock said yes
            if db_url.startswith("sqlite"):
                files_while_running = _sqlite_files(db_url)
    for page, body in seen.items():
        _assert_absent(body, page)
    for request in hook.received:
        _assert_absent(_request_text(request), f"a {request.path} notification")
    _assert_absent(caplog.text, "the logs")
    _assert_absent(" ".join(str(r.args) for r in caplog.records), "log arguments")
    _assert_absent(await _dump_tables(db_url), "the database tables")
    if db_url.startswith("sqlite"):
        assert "monitor.db-wal" in files_while_running  # WAL mode: the WAL file is searched as well
        for name, data in {**files_while_running, **_sqlite_files(db_url)}.items():
            _assert_absent(data, name)


@asynccontextmanager
async def upstream(routes: web.RouteTableDef) -> AsyncIterator[str]:
    """A tiny OpenAI-compatible server on 127.0.0.1; yields its root URL."""
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_a_target_that_echoes_the_key_does_not_get_it_stored() -> None:
    """Some gateways quote the Authorization header in their 401; the error detail must not carry it."""
    routes = web.RouteTableDef()

    @routes.post("/v1/chat/completions")
    async def echo(request: web.Request) -> web.Response:
        sent = request.headers.get("Authorization", "")
        return web.json_response({"error": {"message": f"invalid credentials: {sent}"}}, status=401)

    async with upstream(routes) as root, aiohttp.ClientSession() as session:
        settings = parse_settings(
            {"targets": [{"name": "gw", "base_url": root + "/v1"}], "probes": [chat_probe(target="gw")]}
        )
        result = await Prober(session).run(settings.targets[0], settings.probes[0], CANARY)
    assert result.error_kind == "http_error" and result.http_status == 401
    assert result.error_detail is not None and "invalid credentials: Bearer [redacted]" in result.error_detail
    _assert_absent(json.dumps(result.to_json()), "the result")


def _echo_routes(seen: list[str]) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.post("/v1/chat/completions")
    @routes.post("/v1/completions")
    async def echo(request: web.Request) -> web.Response:
        sent = request.headers.get("Authorization", "")
        seen.append(sent)
        return web.json_response({"error": {"message": f"invalid credentials: {sent}"}}, status=401)

    return routes


async def _loadtest(root: str, db_url: str, cwd: Path, *args: str, **env: str) -> tuple[int | None, bytes, bytes]:
    """`llm-monitor loadtest` for 2 s against `root`, with the key in its variable: exit code, stdout, stderr."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT), KEY_ENV: CANARY, **env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "loadtest", "--base-url", root + "/v1", "--db", db_url,
        "--api-key-env", KEY_ENV, "--duration", "2s", *args,
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(80):
        stdout, stderr = await proc.communicate()
    return proc.returncode, stdout, stderr


@pytest.mark.load
@pytest.mark.timeout(90)
async def test_a_load_run_against_a_target_that_echoes_the_key_stores_no_key(
    sqlite_db_url: str, tmp_path: Path
) -> None:
    """Locust users keep error details as the run's error samples (stored); a key quoted back must not get there."""
    seen: list[str] = []
    async with upstream(_echo_routes(seen)) as root:
        _, stdout, stderr = await _loadtest(root, sqlite_db_url, tmp_path, "--users", "1", "--json")
    assert seen and set(seen) == {f"Bearer {CANARY}"}, stderr.decode()[-2000:]  # the users sent the key
    summary = json.loads(stdout)["summary"]
    assert summary["errors"]["http_error"] > 0 and summary["error_samples"]["http_error"]
    _assert_absent(await _dump_tables(sqlite_db_url), "the database tables", (CANARY,))
    _assert_absent(stdout + stderr, "the loadtest output", (CANARY,))
    for name, data in _sqlite_files(sqlite_db_url).items():
        _assert_absent(data, name, (CANARY,))


# Terminal escapes: an OSC 52 clipboard write, a colour, a C1 CSI, a bell and a backspace; then Rich markup.
_TERMINAL_TRAPS = "\x1b]52;c;cm0gLXJmIH4=\x07 \x1b[31mred \x9b2J \x08 [bold]bold[/bold] [link=http://x]x[/link]"


@pytest.mark.load
@pytest.mark.timeout(90)
async def test_a_load_runs_printed_errors_are_inert_in_a_terminal(sqlite_db_url: str, tmp_path: Path) -> None:
    """The printed summary quotes the server's error details: no escape sequence or markup of theirs may act."""
    routes = web.RouteTableDef()

    @routes.post("/v1/chat/completions")
    @routes.post("/v1/completions")
    async def hostile(request: web.Request) -> web.Response:
        sent = request.headers.get("Authorization", "")
        if request.path.endswith("/chat/completions"):
            return web.json_response({"error": {"message": f"{_TERMINAL_TRAPS} {sent}"}}, status=401)
        return web.json_response({"error": {"message": "second"}}, status=401)

    async with upstream(routes) as root:
        code, stdout, stderr = await _loadtest(
            root, sqlite_db_url, tmp_path, "--users", "2", "--no-server-metrics", COLUMNS="400", FORCE_COLOR="1"
        )
    assert code == 1, stderr.decode()[-2000:]  # no request succeeded
    _assert_absent(stdout + stderr, "the loadtest output", (CANARY,))
    # FORCE_COLOR: Rich writes its own SGR escapes; every other ESC, and every BEL, backspace or C1, would be theirs.
    shown = stdout.decode()
    theirs = [c for c in re.sub(r"\x1b\[[0-9;]*m", "", shown) if c in "\x1b\x07\x08" or "\x80" <= c <= "\x9f"]
    assert not theirs, theirs
    plain = re.sub(r"\x1b\[[0-9;]*m", "", shown)
    # Their markup is printed as text, the key as [redacted]; both distinct details are shown.
    assert "[bold]bold[/bold] [link=http://x]x[/link] Bearer [redacted]" in plain, plain[-3000:]
    assert "\ufffd]52;c;cm0gLXJmIH4=\ufffd" in plain and "also: " in plain and "second" in plain


def test_probe_json_and_debug_logs_never_show_the_key(mock: MockProcess, tmp_path: Path) -> None:
    mock.configure(api_key=CANARY)
    db = tmp_path / "probe.db"
    config = tmp_path / "monitor.yaml"
    raw = {
        "storage": {"url": f"sqlite:///{db}"},
        "targets": [{"name": "mock", "base_url": mock.base_url, "api_key_env": KEY_ENV}],
        "probes": [chat_probe(max_tokens=64), completion_probe(max_tokens=4, stream=False)],
    }
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT), KEY_ENV: CANARY}
    out = subprocess.run(
        [sys.executable, "-m", "monitor", "--log-level", "debug", "probe", "--json", "-c", str(config)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    results = json.loads(out.stdout)
    assert [r["ok"] for r in results] == [True, True], out.stderr[-2000:]  # authenticated with the key
    assert "DEBUG" in out.stderr  # debug logging was on
    _assert_absent(out.stdout, "probe --json", (CANARY,))
    _assert_absent(out.stderr, "the debug log", (CANARY,))
    for name, data in _sqlite_files(f"sqlite:///{db}").items():
        _assert_absent(data, name, (CANARY,))


# --- the API's writes and its bind -----------------------------------------------------------------------


async def test_writes_without_the_bearer_token_get_401(
    mock: MockProcess, sqlite_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    raw = daemon_config(
        mock.base_url, sqlite_db_url, chat_probe(interval_s=60), api={"port": 0, "token_env": TOKEN_ENV}
    )
    silence = {"matchers": {"alertname": "x"}, "duration_s": 60, "comment": "test"}
    writes = [("POST", "/api/v1/silences"), ("DELETE", "/api/v1/silences/1"), ("PUT", "/api/v1/silences"),
              ("PATCH", "/api/v1/alerts"), ("POST", "/"), ("DELETE", "/no/such/route")]  # fmt: skip
    bad = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN},
           {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Bearer {TOKEN[:-1]}"}]  # fmt: skip
    async with run_daemon_in_task(load_settings_from(raw)) as daemon, aiohttp.ClientSession() as http:
        api = str(daemon.api_url)
        for method, path in writes:
            for headers in bad:
                async with http.request(method, api + path, json=silence, headers=headers) as resp:
                    assert resp.status == 401, (method, path, headers, resp.status)
                    assert resp.headers["WWW-Authenticate"] == "Bearer"
        async with http.get(api + "/api/v1/silences") as resp:
            assert resp.status == 200 and await resp.json() == []  # nothing got through; reads stay open
        good = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(api + "/api/v1/silences", json=silence, headers=good) as resp:
            assert resp.status == 201
            created = await resp.json()
        async with http.delete(f"{api}/api/v1/silences/{created['id']}", headers=good) as resp:
            assert resp.status == 200


def load_settings_from(raw: dict[str, Any]) -> Settings:
    """Like load_settings: the secrets a config names are read from the (test's) environment."""
    return resolve_keys(parse_settings(raw))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.internal"])
async def test_a_non_loopback_bind_without_a_token_is_refused(host: str, tmp_path: Path) -> None:
    db = tmp_path / "never.db"
    settings = parse_settings(daemon_config("http://127.0.0.1:9/v1", f"sqlite:///{db}", api={"host": host}))
    with pytest.raises(ConfigError, match=rf"^api\.host: binding to {host} needs api\.token_env"):
        await Daemon(settings).serve()
    assert not db.exists()  # refused before anything was opened
    for loopback in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_bind(parse_settings({"api": {"host": loopback}}))


# --- hostile model output, and signatures ---------------------------------------------------------------


def _hostile_routes() -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.post("/ok/v1/chat/completions")
    async def reply(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in (HOSTILE[:40], HOSTILE[40:]):
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        return resp

    @routes.post("/bad/v1/chat/completions")
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": HOSTILE, "type": "BadRequestError", "code": 400}}, status=400)

    return routes


def _strings(value: Any, holder: Any = None) -> Iterator[tuple[Any, str]]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item, value)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, holder)
    elif isinstance(value, str):
        yield holder, value


def _check_chat_format(fmt: str, request: ReceivedRequest) -> None:
    body = request.json
    if fmt == "slack":
        rendered = [body["text"]] + [
            s for h, s in _strings(body["blocks"]) if isinstance(h, dict) and h.get("type") == "mrkdwn"
        ]
        mrkdwn = " ".join(rendered)
        assert "&lt;script&gt;" in mrkdwn and "&lt;!channel&gt;" in mrkdwn
        assert "<script" not in mrkdwn and "<!channel>" not in mrkdwn and "<http://evil" not in mrkdwn
    elif fmt == "feishu":
        holders = [h for h, s in _strings(body) if "<script>" in s]
        assert holders and all(isinstance(h, dict) and h.get("tag") == "plain_text" for h in holders)
        assert "lark_md" not in request.body.decode()
    else:
        markdown = body["markdown"]["text" if fmt == "dingtalk" else "content"]
        assert "&lt;script&gt;" in markdown and r"\[click\]\(http://evil.example\)" in markdown
        for raw in ("<script", "<img", "<!channel", "<http", "](http", "`code`"):
            assert raw not in markdown, (fmt, raw)


def _independent_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The README's algorithm, written again from its description: sha256= hex HMAC of `{timestamp}.{body}`."""
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


@pytest.mark.timeout(90)
async def test_hostile_model_output_is_inert_in_the_dashboard_and_chat_messages_and_signatures_verify(
    sqlite_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SIGNING_SECRET)
    async with upstream(_hostile_routes()) as root, WebhookReceiver() as hook:
        raw = daemon_config(
            root + "/ok/v1", sqlite_db_url, chat_probe(name="reply", interval_s=0.5),
            chat_probe(name="refused", target="bad", interval_s=0.5),
            rules=[{"name": "refusing", "kind": "consecutive_failures", "count": 2, "scope": {"probe": "refused"}}],
            receivers=_receivers(hook, ("generic", *CHAT_FORMATS)),
        )  # fmt: skip
        raw["targets"].append({"name": "bad", "base_url": root + "/bad/v1"})
        async with run_daemon_in_task(load_settings_from(raw)) as daemon, aiohttp.ClientSession() as http:
            api = str(daemon.api_url)
            await wait_for(lambda: len(hook.delivered()) >= 5, timeout_s=30, what="notifications in five formats")
            pages = {}
            for page in ("/probes/mock/reply", "/probes/bad/refused", "/alerts", "/"):
                status, body, headers = await _get(http, api + page)
                assert status == 200, (page, body[:300])
                assert "script-src 'self'" in headers["Content-Security-Policy"]
                assert "unsafe-inline" not in headers["Content-Security-Policy"]
                pages[page] = body

    # The dashboard: the reply and the error quote the hostile text, escaped as text.
    for page in ("/probes/mock/reply", "/probes/bad/refused"):
        html = pages[page]
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, page
        assert "<script>alert" not in html and "<img src=x" not in html, page
    assert "<script>alert" not in pages["/alerts"] and "<img src=x" not in pages["/alerts"]

    delivered = {r.path.rsplit("/", 1)[1]: r for r in hook.delivered()}
    generic = delivered["generic"].json
    assert HOSTILE in generic["alert"]["annotations"]["summary"]  # JSON formats carry the text as data
    for fmt in CHAT_FORMATS:
        _check_chat_format(fmt, delivered[fmt])

    # Every request is signed; the signature verifies with the library and with a re-implementation.
    for request in hook.received:
        timestamp = request.headers["X-LLM-Monitor-Timestamp"]
        signature = request.headers["X-LLM-Monitor-Signature"]
        assert signature == _independent_signature(SIGNING_SECRET, timestamp, request.body)
        assert verify_signature(SIGNING_SECRET, timestamp, request.body, signature)
        assert not verify_signature(SIGNING_SECRET, timestamp, request.body + b" ", signature)
        assert not verify_signature("another-secret", timestamp, request.body, signature)
        assert not verify_signature(SIGNING_SECRET, str(int(timestamp) + 1), request.body, signature)
