"""The drift alert end to end: the real mock process, the real Fingerprinter, the AlertEngine, a webhook receiver.

Each deployment knob of the mock is flipped at run time; the drift alerts it fires are counted as
they reach the receiver. An unchanged mock fires none. (What the fingerprint itself judges is
tests/test_fingerprint.py's subject; here it is only the source of real observations.)
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.engine import AlertEngine
from monitor.alerts.outbox import Outbox
from monitor.alerts.source import RawWindowSource
from monitor.clock import ManualClock
from monitor.config import Settings, parse_settings
from monitor.fingerprint.runner import Fingerprinter
from monitor.store import create_engine, upgrade
from tests.mockserver import MockProcess
from tests.receivers import WebhookReceiver
from tests.test_fingerprint import KNOBS

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


class Pipeline:
    """Fingerprint run -> on_deployment -> outbox -> dispatcher -> receiver, on one SQLite file."""

    def __init__(
        self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], http: aiohttp.ClientSession
    ) -> None:
        self.settings = settings
        self.clock = ManualClock(T0)
        self.fingerprinter = Fingerprinter(sessionmaker, http)
        self.engine = AlertEngine(
            settings, sessionmaker, source=RawWindowSource(sessionmaker), clock=self.clock,
            outbox=Outbox(sessionmaker),
        )  # fmt: skip
        self.dispatcher = Dispatcher(settings, sessionmaker, http, clock=self.clock, secrets={}, rng=random.Random(1))

    async def run(self, hook: WebhookReceiver) -> list[tuple[str, str]]:
        """One scheduled run an hour after the last; (status, component) of what reached the receiver."""
        self.clock.advance(3600)
        target = self.settings.targets[0]
        assert target.doctor is not None
        observations = await self.fingerprinter.run(target, target.doctor.fingerprint, None, now=self.clock.now())
        await self.engine.on_deployment(observations)
        before = len(hook.received)
        await self.dispatcher.dispatch_due()
        return [(r.json["status"], r.json["alert"]["labels"]["component"]) for r in hook.received[before:]]


@pytest.fixture(name="pipeline")
async def fix_pipeline(mock: MockProcess, sqlite_db_url: str) -> AsyncIterator[tuple[Pipeline, WebhookReceiver]]:
    db = create_engine(sqlite_db_url)
    try:
        await upgrade(db)
        async with aiohttp.ClientSession() as http, WebhookReceiver() as hook:
            settings = parse_settings(
                {
                    "targets": [
                        {"name": "mock", "base_url": mock.base_url, "model": "glm-4-9b-chat", "doctor": {}},
                    ],
                    "rules": [{"name": "drift", "kind": "drift"}],
                    "receivers": [{"name": "ops", "url": hook.url}],
                }
            )
            yield Pipeline(settings, async_sessionmaker(db, expire_on_commit=False), http), hook
    finally:
        await db.dispose()


async def test_an_unchanged_mock_fires_no_drift_alert(pipeline: tuple[Pipeline, WebhookReceiver]) -> None:
    p, hook = pipeline
    for _ in range(10):
        assert await p.run(hook) == []
    assert await p.engine.alerts(include_inactive=True) == []


@pytest.mark.parametrize(("knob", "expected"), KNOBS, ids=[next(iter(k)) for k, _ in KNOBS])
async def test_each_knob_fires_its_drift_alerts_and_resolving_it_resolves_them(
    pipeline: tuple[Pipeline, WebhookReceiver], mock: MockProcess, knob: dict[str, object], expected: set[str]
) -> None:
    p, hook = pipeline
    assert await p.run(hook) == []  # the first run is the baseline
    mock.configure(**knob)
    fired = await p.run(hook)
    assert sorted(fired) == sorted(("firing", c) for c in expected)
    for request in hook.received:
        annotations = request.json["alert"]["annotations"]
        assert annotations["diff"].startswith(("-", "@@")) and "fingerprint accept" in annotations["fix"]
    assert await p.run(hook) == []  # still drifted: no repeat within repeat_interval
    mock.reset()
    assert sorted(await p.run(hook)) == sorted(("resolved", c) for c in expected)
    assert p.clock.now() - T0 == timedelta(hours=4)
