"""Hostile and flaky servers against the fingerprint: no crash, no key stored, no false drift.

Each test runs the real Fingerprinter against a small aiohttp.web server on 127.0.0.1 whose
answers the test sets per path.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from monitor.config import TargetSettings
from monitor.config.deployment import FingerprintSettings
from monitor.fingerprint.runner import Fingerprinter

KEY = f"sk-hostile-{uuid.uuid4().hex}"
T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
_CHAT = {"choices": [{"message": {"content": f"hi {KEY}"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 9}}


class Server:
    """Answers per path: (status, JSON body); a missing path is 404."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, Any]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        status, body = self.answers.get(request.path, (404, {"error": "not found"}))
        return web.Response(status=status, text=json.dumps(body), content_type="application/json")


@pytest.fixture(name="server")
async def fix_server(aiohttp_server: AiohttpServer) -> AsyncIterator[tuple[Server, str]]:
    server = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    running = await aiohttp_server(app, host="127.0.0.1")
    yield server, f"http://127.0.0.1:{running.port}/v1"


async def _run(engine: AsyncEngine, base_url: str, at: datetime) -> list[Any]:
    async with aiohttp.ClientSession() as http:
        fp = Fingerprinter(async_sessionmaker(engine, expire_on_commit=False), http)
        return await fp.run(TargetSettings(name="h", base_url=base_url), FingerprintSettings(), KEY, now=at)


@pytest.mark.parametrize(
    "body",
    [
        {"data": "not a list"},
        {"data": [1, "x", None, {"id": {"nested": KEY}, "max_model_len": float("inf")}]},
        {"data": [{"id": f"m{i}", "root": "r" * 10_000} for i in range(500)]},
        [1, 2, 3],
    ],
    ids=["data-not-a-list", "odd-entries", "huge", "not-an-object"],
)
async def test_odd_bodies_are_values_not_crashes(server: tuple[Server, str], engine: AsyncEngine, body: Any) -> None:
    srv, base_url = server
    srv.answers = {
        "/v1/models": (200, body),
        "/tokenize": (200, {"tokens": "nope"}),
        "/version": (200, {"version": {"x": KEY}}),
        "/props": (200, {"default_generation_settings": "a string", "build_info": KEY}),
        "/v1/chat/completions": (200, {**_CHAT, "choices": [{"logprobs": {"content": [{"top_logprobs": [{}] * 50}]}}]}),
    }
    first = await _run(engine, base_url, T0)
    again = await _run(engine, base_url, T0 + timedelta(hours=1))
    assert not any(o.active for o in first + again)
    async with engine.connect() as conn:
        stored = (await conn.exec_driver_sql("SELECT value, error FROM fingerprints")).all()
    assert stored and KEY not in json.dumps([list(r) for r in stored], default=str)
    assert all(len(json.dumps(row[0])) <= 64 * 1024 for row in stored)


async def test_a_flaky_server_is_no_drift(server: tuple[Server, str], engine: AsyncEngine) -> None:
    srv, base_url = server
    healthy = {
        "/v1/models": (200, {"data": [{"id": "m", "meta": {"n_ctx": 2048}}]}),
        "/props": (200, {"build_info": "b1", "default_generation_settings": {"params": {"temperature": 0.8}}}),
        "/apply-template": (200, {"prompt": "<|im_start|>user\nhi"}),
        "/tokenize": (200, {"tokens": [1, 2, 3]}),
        "/v1/chat/completions": (200, _CHAT),
    }
    srv.answers = dict(healthy)
    assert not any(o.active for o in await _run(engine, base_url, T0))
    for i, (path, status) in enumerate([("/props", 503), ("/tokenize", 500), ("/v1/chat/completions", 429),
                                        ("/v1/models", 502), ("/apply-template", 503)]):  # fmt: skip
        srv.answers = {**healthy, path: (status, {"error": "busy"})}
        observations = await _run(engine, base_url, T0 + timedelta(hours=i + 1))
        assert [o.key for o in observations if o.active] == [], (path, [o.summary for o in observations])
    srv.answers = {**healthy, "/props": (200, {"build_info": "b2", "default_generation_settings": {"params": {}}})}
    drifted = {o.key for o in await _run(engine, base_url, T0 + timedelta(hours=9)) if o.active}
    assert drifted == {"version", "sampling_defaults"}
