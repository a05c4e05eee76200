"""What the dashboard's summary tiles, default window and truncation colours say, over real databases.

Built like tests/test_dashboard.py: the production app factory, a migrated database of each backend,
results stored through the Store and alert state through the alert tables.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from monitor.alerts import repo as alert_repo
from monitor.alerts.model import fingerprint
from monitor.alerts.state import AlertRecord
from monitor.config import ProbeSettings, Settings, load_settings
from monitor.results import ProbeResult
from monitor.store.repo import Store
from tests.dashboard_data import dashboard_app, result

Client = TestClient[web.Request, web.Application]


def _hello() -> list[dict[str, str]]:
    # A fresh list per probe: yaml.safe_dump would write a shared one as an alias, which configs refuse.
    return [{"role": "user", "content": "你好"}]


def _settings(tmp_path: Path) -> Settings:
    raw: dict[str, Any] = {
        "targets": [{"name": "glm4", "base_url": "http://127.0.0.1:8000/v1"}],
        "probes": [
            {"name": "chat", "target": "glm4", "messages": _hello(), "max_tokens": 512},
            {"name": "chat-short", "target": "glm4", "messages": _hello(), "max_tokens": 4},
            {"name": "completion", "target": "glm4", "endpoint": "completion", "prompt": "你好", "max_tokens": 8},
        ],
        "rules": [
            {"name": "chat-failing", "kind": "consecutive_failures", "count": 1, "scope": {"probe": "chat"}},
        ],
    }
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return load_settings(path)


@pytest.fixture(name="client")
async def fix_client(aiohttp_client: AiohttpClient, engine: AsyncEngine, tmp_path: Path) -> Client:
    return await aiohttp_client(dashboard_app(_settings(tmp_path), engine))


def _probe(tmp_path: Path, name: str) -> ProbeSettings:
    return next(p for p in _settings(tmp_path).probes if p.name == name)


def _http_error(probe: ProbeSettings, at: datetime) -> ProbeResult:
    failed = result(probe, at, error="HTTP 503: Service Unavailable")
    return ProbeResult(
        probe=failed.probe, target=failed.target, endpoint=failed.endpoint, stream=failed.stream, started_at=at,
        max_tokens=failed.max_tokens, http_status=503, error_kind="http_error", error_detail=failed.error_detail,
        elapsed_ms=4.0,
    )  # fmt: skip


def _tiles(page: str) -> dict[str, str]:
    found = re.findall(r'<div class="stat-label">([^<]*)</div><div class="stat-value">([^<]*)</div>', page)
    return dict(found)


def _tile_class(page: str, label: str) -> str:
    match = re.search(r'<div class="(stat[^"]*)"><div class="stat-label">' + re.escape(label), page)
    assert match is not None, label
    return match.group(1)


async def test_an_erroring_probe_with_a_firing_alert_counts_as_failing(
    client: Client, engine: AsyncEngine, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    store = Store.from_engine(engine)
    await store.add_results([_http_error(_probe(tmp_path, "chat"), now - timedelta(minutes=1))])
    await store.add_results(
        [result(_probe(tmp_path, "completion"), now - timedelta(minutes=1), finish_reason="length")]
    )
    labels = {"alertname": "chat-failing", "probe": "chat", "target": "glm4", "severity": "warning"}
    record = AlertRecord(
        fingerprint=fingerprint(labels), rule="chat-failing", labels=labels, state="firing", annotations={},
        active_since=now - timedelta(minutes=1), fired_at=now - timedelta(minutes=1), last_value=1.0,
        threshold=1.0, last_eval_at=now,
    )  # fmt: skip
    async with async_sessionmaker(engine)() as session, session.begin():
        await alert_repo.save_record(session, record, now)

    body = await (await client.get("/api/v1/overview")).json()
    statuses = {r["probe"]: r["status"] for r in body["rows"]}
    assert statuses == {"chat": "firing", "chat-short": "none", "completion": "ok"}
    tiles = _tiles(await (await client.get("/")).text())
    assert (tiles["Probes"], tiles["Healthy"], tiles["Failing"], tiles["Alerts firing"]) == ("3", "1", "1", "1")
    assert body["counts"] == {"probes": 3, "healthy": 1, "failing": 1, "no_data": 1}


@pytest.mark.parametrize(
    ("ages_min", "window", "step_s"),
    [((2, 20), "1h", 60), ((5, 150), "6h", 300), ((5, 60 * 30), "24h", 900), ((5, 60 * 24 * 20), "24h", 900)],
)
async def test_probe_page_default_window_covers_the_stored_span(
    client: Client, engine: AsyncEngine, tmp_path: Path, ages_min: tuple[int, ...], window: str, step_s: int
) -> None:
    now = datetime.now(UTC)
    chat = _probe(tmp_path, "chat")
    await Store.from_engine(engine).add_results([result(chat, now - timedelta(minutes=m)) for m in ages_min])
    body = await (await client.get("/api/v1/probes/glm4/chat")).json()
    assert (body["window"], body["step_s"]) == (window, step_s)
    page = await (await client.get("/probes/glm4/chat")).text()
    active = re.search(r'<a href="/probes/glm4/chat\?window=(\w+)" class="active"', page)
    assert active is not None and active.group(1) == window
    # An explicit window still wins, and a probe without results keeps the old default.
    assert (await (await client.get("/api/v1/probes/glm4/chat?window=7d")).json())["window"] == "7d"
    assert (await (await client.get("/api/v1/probes/glm4/completion")).json())["window"] == "24h"


async def test_expected_truncation_is_shown_neutrally(client: Client, engine: AsyncEngine, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    cut = [
        result(_probe(tmp_path, name), now - timedelta(minutes=m), finish_reason="length", tokens=4)
        for name in ("completion", "chat-short")
        for m in (1, 2)
    ]
    await Store.from_engine(engine).add_results(cut)
    overview = await (await client.get("/")).text()
    cells = {}
    for row in overview.split('<tr class="row-')[1:]:
        name = re.search(r'<a href="/probes/glm4/([\w-]+)">', row)
        cell = re.search(r'<td class="num"><span class="(v[^"]*)">100 %', row)
        if name is not None and cell is not None:
            cells[name.group(1)] = cell.group(1)
    # A completion is a continuation that max_tokens ends; a chat reply cut off is worth a look.
    assert cells == {"completion": "v", "chat-short": "v warn"}
    completion = await (await client.get("/probes/glm4/completion")).text()
    assert _tile_class(completion, "Truncation rate") == "stat"
    chat = await (await client.get("/probes/glm4/chat-short")).text()
    assert _tile_class(chat, "Truncation rate") == "stat warn"
