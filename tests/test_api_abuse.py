"""Hostile requests to the real API app (production factory, real socket, real SQLite and PostgreSQL).

Each gets a 4xx with a one-line reason and leaves no traceback in the log: out-of-range durations
and ids, non-finite numbers, deeply nested JSON, an oversized URL, a foreign `Host` (DNS
rebinding), and reads without the read token when one is configured.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from monitor.alerts.clock import SystemClock
from monitor.alerts.engine import AlertEngine
from monitor.alerts.outbox import Outbox
from monitor.alerts.source import RawWindowSource
from monitor.api import create_app
from monitor.config import Settings, load_settings, parse_settings
from monitor.store.db import connect
from monitor.store.repo import Store
from monitor.store.rollups import Rollups
from tests.conftest import chat_probe
from tests.mockserver import MockProcess
from tests.test_daemon import daemon_config, run_daemon_in_task

WRITE_TOKEN, READ_TOKEN = "write-token-abc", "read-token-xyz"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
HUGE_ID = "1" * 30


def _settings(tmp_path: Path, **api: Any) -> Settings:
    raw: dict[str, Any] = {
        "targets": [{"name": "mock", "base_url": "http://127.0.0.1:9/v1"}],
        "probes": [{"name": "chat", "target": "mock", "messages": [{"role": "user", "content": "hi"}]}],
        "api": api,
    }
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_settings(path, environ={"W_TOKEN": WRITE_TOKEN, "R_TOKEN": READ_TOKEN})


@pytest.fixture(name="make_client")
def fix_make_client(aiohttp_client: AiohttpClient, engine: AsyncEngine, tmp_path: Path) -> MakeClient:
    async def make(**api: Any) -> Client:
        settings = _settings(tmp_path, **api)
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        alerts = AlertEngine(
            settings, sessionmaker, source=RawWindowSource(sessionmaker), clock=SystemClock(),
            outbox=Outbox(sessionmaker),
        )  # fmt: skip
        app = create_app(
            settings, store=Store.from_engine(engine), db=engine, alerts=alerts, rollups=Rollups(sessionmaker),
            scheduler_running=lambda: True,
        )  # fmt: skip
        return await aiohttp_client(app)

    return make


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text


async def _assert_400(resp: Any, reason: str, status: int = 400) -> None:
    body = await resp.json()
    assert resp.status == status, body
    assert reason in body["error"] and "\n" not in body["error"], body


async def test_out_of_range_and_non_finite_input_is_400(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await make_client(token_env="W_TOKEN")
    auth = {"Authorization": f"Bearer {WRITE_TOKEN}"}
    for path in ("/api/v1/results?since=99999999999999d", "/api/v1/trend?since=99999999999999d"):
        await _assert_400(await client.get(path), "since: ")
    for silence_id in (HUGE_ID, "1" * 5000, "²", "0", "-1", "x"):
        await _assert_400(await client.delete(f"/api/v1/silences/{silence_id}", headers=auth), "id: ")
    for path in (f"/api/v1/loadruns/{HUGE_ID}", f"/loadruns/{HUGE_ID}", "/loadruns/²", "/api/v1/loadruns/١",
                 f"/api/v1/loadruns/1?baseline={HUGE_ID}", "/api/v1/loadruns/1?baseline=²"):  # fmt: skip
        resp = await client.get(path)
        assert resp.status in (400, 404), (path, resp.status)
    silence = {"matchers": {"alertname": "x"}, "comment": "maintenance"}
    for raw_duration in ("1e300", "Infinity", "-Infinity", "NaN", "1e400"):
        body = f'{{"matchers": {{"alertname": "x"}}, "comment": "c", "duration_s": {raw_duration}}}'
        resp = await client.post("/api/v1/silences", data=body, headers={**auth, "Content-Type": "application/json"})
        assert resp.status == 400, (raw_duration, await resp.text())
    resp = await client.post("/api/v1/silences", json={**silence, "ends_at": "9999-12-31T23:59:59"}, headers=auth)
    await _assert_400(resp, "ends_at: ")
    deep = '{"matchers": ' + "[" * 100_000 + "]" * 100_000 + "}"
    resp = await client.post("/api/v1/silences", data=deep, headers={**auth, "Content-Type": "application/json"})
    await _assert_400(resp, "body: ")
    # Still working afterwards.
    resp = await client.post("/api/v1/silences", json={**silence, "duration_s": 60}, headers=auth)
    assert resp.status == 201
    _no_traceback(caplog)


async def test_a_10_kb_url_is_refused_without_a_traceback(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await make_client()
    host, port = str(client.server.host), int(str(client.server.port))
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /api/v1/results?probe={'x' * 10_240} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    assert status_line.split()[1] in (b"400", b"414", b"431"), status_line
    assert (await client.get("/healthz")).status == 200
    _no_traceback(caplog)


# --- who may read, from which Host ---------------------------------------------------------------------


async def test_a_foreign_host_header_is_refused_on_loopback(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(allowed_hosts=["monitor.internal"])
    port = client.server.port
    for good in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST", "monitor.internal"):
        assert (await client.get("/api/v1/results", headers={"Host": good})).status == 200, good
    for evil in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhost.evil.example:1"):
        for path in ("/api/v1/results", "/", "/api/v1/overview", "/metrics", "/healthz"):
            resp = await client.get(path, headers={"Host": evil})
            assert resp.status == 421, (evil, path, resp.status)
            assert "Host" in (await resp.json())["error"]
    _no_traceback(caplog)


async def test_a_non_loopback_bind_takes_any_host(make_client: MakeClient) -> None:
    client = await make_client(host="0.0.0.0", token_env="W_TOKEN")
    assert (await client.get("/api/v1/results", headers={"Host": "monitor.example.com"})).status == 200


READS = ["/api/v1/results", "/api/v1/trend", "/api/v1/alerts", "/api/v1/silences", "/", "/alerts", "/loadruns",
         "/api/v1/overview", "/api/v1/loadruns", "/static/dashboard.css"]  # fmt: skip


async def test_reads_need_the_read_token_when_one_is_set(make_client: MakeClient) -> None:
    client = await make_client(token_env="W_TOKEN", read_token_env="R_TOKEN")
    basic = base64.b64encode(f"anyone:{READ_TOKEN}".encode()).decode()
    for path in READS:
        for bad in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {READ_TOKEN}x"}):
            resp = await client.get(path, headers=bad)
            assert resp.status == 401, (path, bad, resp.status)
            assert "Bearer" in resp.headers["WWW-Authenticate"] and "Basic" in resp.headers["WWW-Authenticate"]
        for good in (f"Bearer {READ_TOKEN}", f"Bearer {WRITE_TOKEN}", f"Basic {basic}"):
            resp = await client.get(path, headers={"Authorization": good})
            assert resp.status == 200, (path, good, resp.status)
    # Probes of the process stay open for healthchecks and Prometheus.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status == 200, path
    # The read token does not allow writes.
    silence = {"matchers": {"alertname": "x"}, "duration_s": 60, "comment": "c"}
    resp = await client.post("/api/v1/silences", json=silence, headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert resp.status == 401


async def test_without_a_read_token_reads_stay_open(make_client: MakeClient) -> None:
    client = await make_client(token_env="W_TOKEN")
    for path in READS:
        assert (await client.get(path)).status == 200, path


# --- the daemon's API: a hung database, and a reload ---------------------------------------------------


async def test_metrics_answers_while_the_database_hangs(
    mock: MockProcess, pg_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock held on the outbox stalls its count; the scrape answers without it, flagged and logged."""
    raw = daemon_config(mock.base_url, pg_db_url, chat_probe(interval_s=3600, max_tokens=8))
    async with run_daemon_in_task(parse_settings(raw)) as daemon, aiohttp.ClientSession() as http:
        url = f"{daemon.api_url}/metrics"
        families = await _scrape(http, url)
        assert families["llm_monitor_outbox_pending"] == 0.0
        assert families['llm_monitor_metrics_query_failed{query="outbox_depth"}'] == 0.0
        blocker = await connect(pg_db_url)
        try:
            async with blocker.connect() as conn:
                await conn.execute(text("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE"))  # held until the rollback
                families = await _scrape(http, url)
                assert "llm_monitor_outbox_pending" not in families
                assert families['llm_monitor_metrics_query_failed{query="outbox_depth"}'] == 1.0
                assert "/metrics: outbox_depth query took over 2 s" in caplog.text
                await conn.rollback()
        finally:
            await blocker.dispose()
        families = await _scrape(http, url)
        assert families["llm_monitor_outbox_pending"] == 0.0


async def _scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    # Far beyond the 2 s query bound: only a hang reaches it (the scrape used to wait for the lock).
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=20)) as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


async def test_a_reload_reaches_the_api_and_the_dashboard(
    mock: MockProcess, sqlite_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "monitor.yaml"
    raw = daemon_config(mock.base_url, sqlite_db_url, chat_probe(interval_s=3600, max_tokens=8))
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    async with run_daemon_in_task(parse_settings(raw), config_path=config) as daemon, aiohttp.ClientSession() as h:
        api = str(daemon.api_url)
        raw["probes"].append(chat_probe(name="added", cron="0 0 1 1 *", max_tokens=8))
        raw["rules"] = [{"name": "added-rule", "kind": "consecutive_failures", "count": 3, "scope": {"probe": "added"}}]
        config.write_text(yaml.safe_dump(raw), encoding="utf-8")
        assert await daemon.reload()
        async with h.get(f"{api}/api/v1/overview") as resp:
            rows = {row["probe"]: row for row in (await resp.json())["rows"]}
        assert rows["added"]["configured"] is True
        async with h.get(f"{api}/alerts") as resp:
            assert resp.status == 200 and "added-rule" in await resp.text()
