"""Hostile servers against the doctor, and the `sanitised` flag in the store.

The doctor's plain JSON requests (`/v1/models`, `/tokenize`) follow the probes' rules: the API key a
server quotes back is redacted before any cut, a redirect is reported and not followed, a body is
read only up to `max_body_bytes`, and an unresolvable host is one clear line. Each test runs the real
doctor (or `python -m monitor doctor`) against a small aiohttp.web server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from monitor.config import TargetSettings, parse_settings, resolve_keys
from monitor.doctor.client import DoctorClient
from monitor.doctor.runner import doctor
from monitor.results import ProbeResult
from monitor.store.db import connect, ensure_schema
from monitor.store.repo import Store
from tests.mockserver import REPO_ROOT

KEY = f"sk-hostile-{uuid.uuid4().hex}"
KEY_START = KEY[:16]  # any cut of the key that kept its start would still show this
MODEL = "m"


@pytest.fixture(name="session")
async def fix_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _echo_app(hits: list[str]) -> web.Application:
    """Lists the model, then answers every other request with an error quoting the Authorization header."""
    routes = web.RouteTableDef()

    @routes.get("/v1/models")
    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "max_model_len": 4096}]})

    async def echo(request: web.Request) -> web.Response:
        hits.append(request.path)
        auth = request.headers.get("Authorization", "")
        # Past 300 characters with the key, within them once it is redacted: a cut before redaction keeps part of it.
        message = "x" * 250 + f" denied for {auth} \ud800"
        return web.json_response({"error": {"message": message}}, status=400, dumps=json.dumps)

    for path in ("/v1/chat/completions", "/v1/completions", "/tokenize"):
        routes.post(path)(echo)
    app = web.Application()
    app.add_routes(routes)
    return app


@pytest.mark.timeout(90)
async def test_a_doctor_run_stores_and_reports_no_key(
    aiohttp_server: AiohttpServer, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hits: list[str] = []
    server = await aiohttp_server(_echo_app(hits))
    raw = {
        "storage": {"url": db_url},
        "targets": [{"name": "t", "base_url": str(server.make_url("/v1")), "model": MODEL, "api_key_env": "HK"}],
    }
    settings = resolve_keys(parse_settings(raw), {"HK": KEY})
    report = await doctor(settings, "t")
    assert "/tokenize" in hits and "/v1/chat/completions" in hits  # the key was sent and quoted back
    shown = json.dumps(report.to_json(), ensure_ascii=False)
    assert KEY_START not in shown and "[redacted]" in shown, shown
    engine = await connect(db_url)
    try:
        stored = await Store.from_engine(engine).recent_results(source="doctor")
    finally:
        await engine.dispose()
    assert stored and all(KEY_START not in json.dumps(r.error_detail) for r in stored)
    assert any(r.error_detail and "[redacted]" in r.error_detail for r in stored)
    # The lone surrogate the server sent was replaced, and the rows say so.
    assert all(r.sanitised for r in stored if r.error_kind == "http_error"), [(r.probe, r.sanitised) for r in stored]


def _target(base_url: str, **kw: object) -> TargetSettings:
    return parse_settings({"targets": [{"name": "t", "base_url": base_url, **kw}]}).targets[0]


async def test_a_redirect_is_reported_not_followed(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    hits: list[str] = []
    routes = web.RouteTableDef()

    @routes.get("/v1/models")
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    @routes.get("/elsewhere")
    async def elsewhere(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"data": [{"id": MODEL}]})

    app = web.Application()
    app.add_routes(routes)
    server = await aiohttp_server(app)
    reply = await DoctorClient(session, _target(str(server.make_url("/v1"))), KEY).get_json("/models")
    assert (reply.status, reply.data, reply.detail) == (302, None, "HTTP 302: redirect to /elsewhere")
    assert hits == []


async def test_a_json_body_past_max_body_bytes_is_not_read(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    routes = web.RouteTableDef()

    @routes.get("/v1/models")
    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            await resp.write(b'{"data": [{"id": "')
            for _ in range(64):
                await resp.write(b"a" * 65536)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return resp

    app = web.Application()
    app.add_routes(routes)
    server = await aiohttp_server(app)
    client = DoctorClient(session, _target(str(server.make_url("/v1")), max_body_bytes=100_000), None)
    reply = await client.get_json("/models")
    assert (reply.status, reply.data) == (200, None)
    assert reply.detail == "HTTP 200: reply body exceeds max_body_bytes=100000"


@pytest.mark.timeout(60)
async def test_an_unresolvable_host_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "doctor", "--base-url", "http://nonexistent.invalid/v1",
        "--db", f"sqlite:///{tmp_path / 'd.db'}", cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(50):
        stdout, stderr = await proc.communicate()
    err = stderr.decode()
    assert proc.returncode not in (0, None), (proc.returncode, err)
    assert "Traceback" not in err and "Unknown error" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot resolve host 'nonexistent.invalid'" in lines[0], err
    assert stdout.decode().strip() == ""


async def test_the_sanitised_flag_is_stored_and_read_back(db_url: str) -> None:
    now = datetime.now(UTC)
    results = [
        ProbeResult(probe=f"p{flag}", target="t", endpoint="chat", stream=True, started_at=now, max_tokens=None,
                    error_kind="http_error", error_detail="HTTP 400: \ufffd", sanitised=flag)
        for flag in (True, False)
    ]  # fmt: skip
    engine = await connect(db_url)
    try:
        await ensure_schema(engine)
        store = Store.from_engine(engine)
        await store.add_results(results, source="probe")
        stored = {r.probe: r.sanitised for r in await store.recent_results()}
    finally:
        await engine.dispose()
    assert stored == {"pTrue": True, "pFalse": False}
