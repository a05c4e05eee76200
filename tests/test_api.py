"""The API app built by the production factory, served on a real socket, over a real database."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from monitor.alerts.clock import SystemClock
from monitor.alerts.engine import AlertEngine
from monitor.alerts.outbox import Outbox
from monitor.alerts.source import RawWindowSource
from monitor.api import check_bind, create_app, is_loopback
from monitor.config import Settings, load_settings
from monitor.errors import ConfigError
from monitor.store.db import connect, ensure_schema
from monitor.store.repo import Store
from monitor.store.rollups import Rollups
from tests.test_rollups import make_result

TOKEN = "s3cret-token"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


def _settings(tmp_path: Path, *, token: bool = False, host: str = "127.0.0.1") -> Settings:
    raw: dict[str, Any] = {
        "targets": [{"name": "mock", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "MOCK_KEY"}],
        "probes": [{"name": "chat", "target": "mock", "messages": [{"role": "user", "content": "hi"}]}],
        "api": {"host": host, **({"token_env": "API_TOKEN"} if token else {})},
    }
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_settings(path, environ={"API_TOKEN": TOKEN, "MOCK_KEY": "sk-target-secret"})


@pytest.fixture(name="engine")
async def fix_engine(sqlite_db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await connect(sqlite_db_url)
    try:
        await ensure_schema(engine)
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(name="make_client")
def fix_make_client(aiohttp_client: AiohttpClient, engine: AsyncEngine, tmp_path: Path) -> MakeClient:
    async def make(*, token: bool = False, running: bool = True, **kwargs: Any) -> Client:
        settings = _settings(tmp_path, token=token)
        store = Store.from_engine(engine)
        rollups = Rollups(async_sessionmaker(engine, expire_on_commit=False))
        app = create_app(settings, store=store, db=engine, rollups=rollups, scheduler_running=lambda: running, **kwargs)
        return await aiohttp_client(app)

    return make


async def test_health_and_readiness(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    resp = await client.get("/readyz")
    assert resp.status == 200 and (await resp.json())["checks"] == {"database": "ok", "scheduler": "running"}

    stopped = await make_client(running=False)
    resp = await stopped.get("/readyz")
    assert resp.status == 503
    assert await resp.json() == {"ready": False, "checks": {"database": "ok", "scheduler": "not running"}}


async def test_readyz_reports_an_unreachable_database(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    engine = await connect(f"sqlite+aiosqlite:///{tmp_path}/gone.db")
    try:
        settings = _settings(tmp_path)
        client = await aiohttp_client(
            create_app(settings, store=Store.from_engine(engine), db=engine, scheduler_running=lambda: True)
        )
        await engine.dispose()
        (tmp_path / "gone.db").unlink()
        (tmp_path / "gone.db").mkdir()  # a directory where the file was: every connect fails
        resp = await client.get("/readyz")
        body = await resp.json()
        assert resp.status == 503 and body["checks"]["database"].startswith("cannot reach database")
    finally:
        await engine.dispose()
        # aiosqlite keeps a failed connection's worker thread until the object is collected; collect it
        # while this loop still runs, or the thread reports to a closed loop during a later test.
        gc.collect()
        await asyncio.sleep(0.1)


async def test_results_filters_and_newest_first(make_client: MakeClient, engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    await Store.from_engine(engine).add_results(
        [make_result(now - timedelta(minutes=m), probe=p) for m in (30, 20, 10) for p in ("chat", "other")]
    )
    client = await make_client()
    resp = await client.get("/api/v1/results", params={"probe": "chat"})
    rows = await resp.json()
    assert resp.status == 200 and [r["probe"] for r in rows] == ["chat"] * 3
    assert [r["started_at"] for r in rows] == sorted((r["started_at"] for r in rows), reverse=True)
    assert rows[0]["checks"] == [] and rows[0]["ok"] is True and rows[0]["latency_ms"] == 100.0
    text = await (await client.get("/api/v1/results")).text()
    assert "sk-target-secret" not in text and TOKEN not in text

    assert len(await (await client.get("/api/v1/results", params={"since": "15m"})).json()) == 2
    since = (now - timedelta(minutes=25)).isoformat()
    assert len(await (await client.get("/api/v1/results", params={"since": since, "limit": "3"})).json()) == 3

    for params, message in (
        ({"limit": "0"}, "limit: must be between 1 and 1000"),
        ({"limit": "x"}, "limit: must be a whole number"),
        ({"since": "yesterday"}, "since: 'yesterday' is neither an ISO 8601 time nor a duration"),
    ):
        resp = await client.get("/api/v1/results", params=params)
        assert resp.status == 400 and await resp.json() == {"error": message}


async def test_trend_reads_rollups(make_client: MakeClient, engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    await Store.from_engine(engine).add_results([make_result(now - timedelta(minutes=m)) for m in range(0, 120, 5)])
    await Rollups(async_sessionmaker(engine, expire_on_commit=False)).run(now + timedelta(seconds=1))
    client = await make_client()
    resp = await client.get("/api/v1/trend", params={"probe": "chat", "since": "3h", "step_s": "3600"})
    points = await resp.json()
    assert resp.status == 200 and sum(p["results"] for p in points) == 24
    assert points[0]["metrics"]["latency_ms"]["p50"] == pytest.approx(100, rel=0.02)
    resp = await client.get("/api/v1/trend", params={"step_s": "90"})
    assert resp.status == 400 and await resp.json() == {"error": "step_s: must be a multiple of 60"}


async def test_writes_need_the_bearer_token(make_client: MakeClient) -> None:
    client = await make_client(token=True)
    body = {"matchers": {"alertname": "x"}, "duration_s": 60, "comment": "test"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        resp = await client.post("/api/v1/silences", json=body, headers=headers)
        assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
        assert await resp.json() == {"error": "writes need Authorization: Bearer <token>"}
    resp = await client.delete("/api/v1/silences/1")
    assert resp.status == 401
    # Reads stay open; with the token the request gets past authentication.
    assert (await client.get("/api/v1/results")).status == 200
    resp = await client.post("/api/v1/silences", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status != 401


async def test_without_a_token_browser_writes_are_refused(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.delete("/api/v1/silences/1", headers={"Origin": "http://evil.example"})
    assert resp.status == 403
    assert (await client.delete("/api/v1/silences/1")).status != 403


async def test_unknown_routes_and_methods_are_json_errors(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.get("/nope")
    assert resp.status == 404 and "error" in await resp.json()
    resp = await client.put("/healthz")
    assert resp.status == 405 and "error" in await resp.json()
    metrics = await client.get("/metrics")
    assert metrics.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_non_loopback_bind_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        check_bind(_settings(tmp_path, host="0.0.0.0"))
    assert str(info.value) == ("api.host: binding to 0.0.0.0 needs api.token_env (writes would be unauthenticated)")
    check_bind(_settings(tmp_path, host="0.0.0.0", token=True))
    check_bind(_settings(tmp_path, host="::1"))
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and not is_loopback("192.168.1.5")
    assert not is_loopback("monitor.example")


async def test_silences_create_list_and_expire(make_client: MakeClient, engine: AsyncEngine, tmp_path: Path) -> None:
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    alerts = AlertEngine(
        _settings(tmp_path), sessionmaker, source=RawWindowSource(sessionmaker), clock=SystemClock(),
        outbox=Outbox(sessionmaker),
    )  # fmt: skip
    client = await make_client(token=True, alerts=alerts)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {"matchers": {"alertname": "high-ttft"}, "duration_s": 7200, "comment": "vLLM upgrade"}
    resp = await client.post("/api/v1/silences", json=body, headers=auth)
    created = await resp.json()
    assert resp.status == 201 and created["matchers"] == {"alertname": "high-ttft"}
    assert created["created_by"] == "api" and created["comment"] == "vLLM upgrade"
    ends_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    resp = await client.post("/api/v1/silences", json={**body, "duration_s": None, "ends_at": ends_at}, headers=auth)
    assert resp.status == 400  # both given
    del body["duration_s"]
    resp = await client.post("/api/v1/silences", json={**body, "ends_at": ends_at, "created_by": "ops"}, headers=auth)
    assert resp.status == 201 and (await resp.json())["created_by"] == "ops"

    listed = await (await client.get("/api/v1/silences")).json()
    assert sorted(s["id"] for s in listed) == [created["id"], created["id"] + 1]
    assert (await client.get("/api/v1/alerts")).status == 200

    resp = await client.delete(f"/api/v1/silences/{created['id']}", headers=auth)
    assert resp.status == 200 and await resp.json() == {"id": created["id"], "expired": True}
    resp = await client.delete(f"/api/v1/silences/{created['id']}", headers=auth)
    assert resp.status == 404
    assert len(await (await client.get("/api/v1/silences")).json()) == 1
    assert len(await (await client.get("/api/v1/silences", params={"expired": "true"})).json()) == 2

    for bad, message in (
        ({"matchers": {}, "duration_s": 5, "comment": "x"}, "matchers: must be a non-empty object"),
        ({"matchers": {"a": "b"}, "duration_s": 5}, "comment: required"),
        ({"matchers": {"a": "b"}, "duration_s": -5, "comment": "x"}, "the silence would end in the past"),
        ({"matchers": {"a": "b"}, "ends_at": "soon", "comment": "x"}, "ends_at: 'soon' is not an ISO 8601 time"),
    ):
        resp = await client.post("/api/v1/silences", json=bad, headers=auth)
        assert resp.status == 400 and (await resp.json())["error"].startswith(message)
    resp = await client.post("/api/v1/silences", data=b"{", headers=auth)
    assert resp.status == 400 and await resp.json() == {"error": "body: not valid JSON"}
