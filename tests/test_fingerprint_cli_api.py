"""`llm-monitor fingerprint show|accept`, the fingerprint API and retention, on a real SQLite file and the mock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import yaml
from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from monitor.api import create_app
from monitor.config import RetentionSettings, TargetSettings, load_settings
from monitor.config.deployment import FingerprintSettings
from monitor.fingerprint.runner import Fingerprinter
from monitor.retention import Retention
from monitor.store import Store
from monitor.store.db import connect, ensure_schema
from monitor.store.fingerprint_repo import FingerprintStore
from monitor.store.rollups import Rollups
from tests.mockserver import MockProcess
from tests.test_cli_alerts import cli

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(name="db_path")
def fix_db_path(tmp_path: Path) -> Path:
    return tmp_path / "monitor.db"


@pytest.fixture(name="engine")
async def fix_engine(db_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await connect(f"sqlite+aiosqlite:///{db_path}")
    try:
        await ensure_schema(engine)
        yield engine
    finally:
        await engine.dispose()


def _config(tmp_path: Path, mock: MockProcess, db_path: Path) -> Path:
    raw = {
        "storage": {"url": f"sqlite+aiosqlite:///{db_path}"},
        "targets": [{"name": "mock", "base_url": mock.base_url, "model": "glm-4-9b-chat", "doctor": {}}],
    }
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


async def _drifted_mock(mock: MockProcess, engine: AsyncEngine) -> None:
    """A baseline, then max_model_len halved and a second fingerprint."""
    async with aiohttp.ClientSession() as http:
        fp = Fingerprinter(async_sessionmaker(engine, expire_on_commit=False), http)
        target = TargetSettings(name="mock", base_url=mock.base_url, model="glm-4-9b-chat")
        await fp.run(target, FingerprintSettings(), None, now=T0)
        mock.configure(max_model_len=4096)
        await fp.run(target, FingerprintSettings(), None, now=T0 + timedelta(hours=1))


async def test_show_and_accept(mock: MockProcess, engine: AsyncEngine, tmp_path: Path, db_path: Path) -> None:
    await _drifted_mock(mock, engine)
    config = str(_config(tmp_path, mock, db_path))
    shown = await cli("fingerprint", "show", "--target", "mock", "--config", config, cwd=tmp_path)
    assert shown.code == 0, shown.stderr
    assert "drift" in shown.stdout and "models" in shown.stdout
    assert "[0].max_model_len=8192" in shown.stdout and "[0].max_model_len=4096" in shown.stdout
    accepted = await cli(
        "fingerprint", "accept", "--target", "mock", "--component", "models", "--by", "ops", "--config", config,
        cwd=tmp_path,
    )  # fmt: skip
    assert accepted.code == 0 and "models" in accepted.stdout, accepted.stderr
    as_json = await cli("fingerprint", "show", "--target", "mock", "--json", "--config", config, cwd=tmp_path)
    report = json.loads(as_json.stdout)
    assert not any(c["drift"] for c in report["components"])
    (models,) = [c for c in report["components"] if c["component"] == "models"]
    assert models["baseline"]["accepted_by"] == "ops"


async def test_bad_input_is_one_line(mock: MockProcess, tmp_path: Path, db_path: Path) -> None:
    config = str(_config(tmp_path, mock, db_path))
    unknown = await cli(
        "fingerprint", "accept", "--target", "mock", "--component", "weights", "--config", config, cwd=tmp_path
    )
    assert unknown.code == 2 and "weights" in unknown.stderr and "Traceback" not in unknown.stderr
    empty = await cli("fingerprint", "show", "--target", "nobody", "--config", config, cwd=tmp_path)
    assert empty.code == 1 and "no fingerprint" in empty.stdout and "Traceback" not in empty.stderr


async def test_the_api(
    mock: MockProcess, engine: AsyncEngine, tmp_path: Path, db_path: Path, aiohttp_client: AiohttpClient
) -> None:
    await _drifted_mock(mock, engine)
    settings = load_settings(_config(tmp_path, mock, db_path))
    store = Store.from_engine(engine)
    app = create_app(settings, store=store, db=engine, rollups=Rollups(async_sessionmaker(engine)))
    client = await aiohttp_client(app)
    resp = await client.get("/api/v1/fingerprints/mock")
    assert resp.status == 200
    drifted = [c["component"] for c in (await resp.json())["components"] if c["drift"]]
    assert drifted == ["models"]
    assert (await client.get("/api/v1/fingerprints/nobody")).status == 404
    bad = await client.post("/api/v1/fingerprints/mock/accept", json={"components": ["weights"]})
    assert bad.status == 400
    ok = await client.post("/api/v1/fingerprints/mock/accept", json={"components": ["models"], "accepted_by": "ci"})
    assert ok.status == 200 and (await ok.json())["accepted"] == ["models"]
    report = await (await client.get("/api/v1/fingerprints/mock")).json()
    assert not any(c["drift"] for c in report["components"])
    # A write from a web page (Origin, no token configured) is refused, as every other write.
    refused = await client.post("/api/v1/fingerprints/mock/accept", headers={"Origin": "http://evil.example"})
    assert refused.status == 403


async def test_retention_keeps_baselines(mock: MockProcess, engine: AsyncEngine) -> None:
    await _drifted_mock(mock, engine)
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    retention = Retention(sessionmaker, RetentionSettings(raw_days=1), rollups=Rollups(sessionmaker))
    await retention.run(now=T0 + timedelta(days=30))
    fp_store = FingerprintStore(sessionmaker)
    assert await fp_store.history("mock") == []
    assert set(await fp_store.baselines("mock")) >= {"models", "tokenizer"}
