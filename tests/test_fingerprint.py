"""Deployment fingerprints against the real mock process: each knob makes its component drift, nothing else does.

The mock (monitor/mock/deployment.py) changes one component per knob, flipped at run time through
`POST /_mock/config`; an unchanged mock with batching-like logprob noise never drifts. Readings and
baselines live in a real SQLite file (and PostgreSQL where `engine` runs on both).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from monitor.config import TargetSettings
from monitor.config.deployment import FINGERPRINT_COMPONENTS, FingerprintSettings
from monitor.deployment import DeploymentObservation
from monitor.fingerprint.runner import Fingerprinter
from tests.mockserver import MockProcess

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)

# knob -> the components it must (and alone may) move.
KNOBS: list[tuple[dict[str, Any], set[str]]] = [
    ({"chat_template_variant": "no_system"}, {"chat_template"}),
    ({"tokenizer_variant": 1}, {"tokenizer"}),
    ({"weights_variant": 1}, {"reply", "logprobs"}),
    ({"server_version": "0.33.0"}, {"version"}),
    ({"max_model_len": 4096}, {"models"}),
    ({"default_max_tokens": 3}, {"sampling_defaults"}),
    # Without stop tokens a reply runs on: the bounded reply ends at max_tokens, and an unbounded one
    # (sampling defaults) at the context window. Both are what the server now does.
    ({"no_stop_tokens": True}, {"stop_behaviour", "sampling_defaults"}),
]


@pytest.fixture(name="http")
async def fix_http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _target(mock: MockProcess) -> TargetSettings:
    return TargetSettings(name="mock", base_url=mock.base_url, model="glm-4-9b-chat")


def _fingerprinter(engine: AsyncEngine, http: aiohttp.ClientSession) -> Fingerprinter:
    return Fingerprinter(async_sessionmaker(engine, expire_on_commit=False), http)


def _active(observations: list[DeploymentObservation]) -> set[str]:
    return {o.key for o in observations if o.active}


async def test_an_unchanged_mock_never_drifts(
    mock: MockProcess, engine: AsyncEngine, http: aiohttp.ClientSession
) -> None:
    fp, settings = _fingerprinter(engine, http), FingerprintSettings()
    for i in range(30):
        observations = await fp.run(_target(mock), settings, None, now=T0 + timedelta(minutes=i))
        assert _active(observations) == set(), [o.summary for o in observations if o.active]
        assert [o.key for o in observations] == list(FINGERPRINT_COMPONENTS)
        assert all(o.kind == "drift" and o.target == "mock" for o in observations)
    latest = await fp.store.latest("mock")
    assert latest["logprobs"].status == "ok" and latest["version"].value == {"version": "0.32.0"}


@pytest.mark.parametrize(("knob", "expected"), KNOBS, ids=[next(iter(k)) for k, _ in KNOBS])
async def test_each_knob_moves_exactly_its_component(
    mock: MockProcess, engine: AsyncEngine, http: aiohttp.ClientSession, knob: dict[str, Any], expected: set[str]
) -> None:
    fp, settings, target = _fingerprinter(engine, http), FingerprintSettings(), _target(mock)
    assert _active(await fp.run(target, settings, None, now=T0)) == set()
    mock.configure(**knob)
    drifted = await fp.run(target, settings, None, now=T0 + timedelta(hours=1))
    assert _active(drifted) == expected
    for o in drifted:
        if o.active:
            assert o.before and o.after and o.before != o.after
            assert "drifted" in o.summary and "fingerprint accept" in (o.fix or "")
    mock.reset()
    assert _active(await fp.run(target, settings, None, now=T0 + timedelta(hours=2))) == set()


async def test_a_readable_diff(mock: MockProcess, engine: AsyncEngine, http: aiohttp.ClientSession) -> None:
    fp, settings, target = _fingerprinter(engine, http), FingerprintSettings(), _target(mock)
    await fp.run(target, settings, None, now=T0)
    mock.configure(max_model_len=4096)
    (models,) = [o for o in await fp.run(target, settings, None, now=T0 + timedelta(hours=1)) if o.active]
    assert models.before == "[0].max_model_len=8192" and models.after == "[0].max_model_len=4096"


async def test_accepting_makes_the_new_value_the_baseline(
    mock: MockProcess, engine: AsyncEngine, http: aiohttp.ClientSession
) -> None:
    fp, settings, target = _fingerprinter(engine, http), FingerprintSettings(), _target(mock)
    await fp.run(target, settings, None, now=T0)
    mock.configure(server_version="0.33.0", max_model_len=4096)
    assert _active(await fp.run(target, settings, None, now=T0 + timedelta(hours=1))) == {"version", "models"}
    assert await fp.accept("mock", ["version"], by="test", now=T0 + timedelta(hours=1)) == ["version"]
    assert _active(await fp.run(target, settings, None, now=T0 + timedelta(hours=2))) == {"models"}
    assert await fp.accept("mock", None, by="test", now=T0 + timedelta(hours=2)) == list(FINGERPRINT_COMPONENTS)
    assert _active(await fp.run(target, settings, None, now=T0 + timedelta(hours=3))) == set()


async def test_a_failing_server_is_not_drift(
    mock: MockProcess, engine: AsyncEngine, http: aiohttp.ClientSession
) -> None:
    fp, settings, target = _fingerprinter(engine, http), FingerprintSettings(), _target(mock)
    await fp.run(target, settings, None, now=T0)
    mock.configure(status=503)  # every /v1 request: a transient failure, each component skipped
    observations = await fp.run(target, settings, None, now=T0 + timedelta(minutes=1))
    assert _active(observations) == set()
    assert {o.key for o in observations} <= {"version", "tokenizer", "chat_template"}  # served outside /v1
    mock.reset()
    mock.configure(error_rate=1.0)  # generation requests answer 500: chat components skipped, not drift
    observations = await fp.run(target, settings, None, now=T0 + timedelta(minutes=2))
    assert _active(observations) == set()
    assert {"reply", "logprobs", "stop_behaviour", "sampling_defaults"}.isdisjoint(o.key for o in observations)
    stored = await fp.store.history("mock", limit=100)
    assert any(r.status == "error" and r.error for r in stored)


async def test_nothing_listening_is_not_drift(engine: AsyncEngine, http: aiohttp.ClientSession) -> None:
    fp = _fingerprinter(engine, http)
    target = TargetSettings(name="gone", base_url="http://127.0.0.1:9/v1", connect_timeout_s=2, timeout_s=5)
    assert await fp.run(target, FingerprintSettings(), None, now=T0) == []
    assert await fp.store.baselines("gone") == {}


async def test_a_disabled_fingerprint_sends_nothing(
    mock: MockProcess, engine: AsyncEngine, http: aiohttp.ClientSession
) -> None:
    fp = _fingerprinter(engine, http)
    assert await fp.run(_target(mock), FingerprintSettings(enabled=False), None, now=T0) == []
    assert await fp.store.history("mock") == []


async def test_only_the_configured_components(
    mock: MockProcess, engine: AsyncEngine, http: aiohttp.ClientSession
) -> None:
    fp = _fingerprinter(engine, http)
    settings = FingerprintSettings(components=["models", "logprobs"])
    observations = await fp.run(_target(mock), settings, None, now=T0)
    assert [o.key for o in observations] == ["models", "logprobs"]
