"""The deployment fingerprint against llama.cpp's llama-server (the conformance tier).

An unchanged server fingerprinted a few times is never drift, and neither is a plain restart; a
restart with another --ctx-size is, on `models` alone, with a readable diff. The hour-long figures
(false alarms, every kind of change) come from benchmarks/drift_soak.py.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from monitor.config import TargetSettings
from monitor.config.deployment import FingerprintSettings
from monitor.fingerprint.runner import Fingerprinter
from tests.realservers.servers import MODEL_NAME, SERVERS, RealServer

pytestmark = [pytest.mark.real, pytest.mark.timeout(600)]

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _target(server: RealServer) -> TargetSettings:
    return TargetSettings(name="llama", base_url=server.base_url, model=MODEL_NAME, timeout_s=120)


async def test_llama_server_drifts_only_when_changed(engine: AsyncEngine, tmp_path: Path) -> None:
    spec = SERVERS["llama-server"].require()
    settings = FingerprintSettings()
    async with aiohttp.ClientSession() as http:
        fp = Fingerprinter(async_sessionmaker(engine, expire_on_commit=False), http)
        with RealServer(spec, tmp_path) as server:
            for i in range(4):
                observations = await fp.run(_target(server), settings, None, now=T0 + timedelta(minutes=i))
                assert [o.key for o in observations if o.active] == [], [o.summary for o in observations]
            assert len(observations) == 8  # every component read (llama.cpp serves them all)
        with RealServer(spec, tmp_path) as server:  # restarted, nothing changed
            observations = await fp.run(_target(server), settings, None, now=T0 + timedelta(minutes=10))
            assert [o.key for o in observations if o.active] == []

        def smaller_context(root: Path, port: int) -> list[str]:
            argv = spec.argv(root, port)
            argv[argv.index("-c") + 1] = "1024"
            return argv

        with RealServer(dataclasses.replace(spec, argv=smaller_context), tmp_path) as server:
            observations = await fp.run(_target(server), settings, None, now=T0 + timedelta(minutes=20))
    (models,) = [o for o in observations if o.active]
    assert models.key == "models" and models.kind == "drift"
    assert (models.before, models.after) == ("[0].max_model_len=2048", "[0].max_model_len=1024")
