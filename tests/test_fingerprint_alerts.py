"""End to end: a mock knob flipped at run time -> Fingerprinter -> AlertEngine -> a `drift` webhook with the diff.

The real mock process, a real database, a real AlertEngine, outbox and dispatcher, and a real
webhook receiver on 127.0.0.1; the clock is moved by hand. Observations are folded as the scheduled
doctor hands them over (`monitor.deployment.fold`). An unchanged mock sends nothing; each flipped
knob sends exactly one `drift` alert, naming its other changed components, resolved on reset.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.engine import AlertEngine
from monitor.alerts.outbox import Outbox
from monitor.alerts.source import RawWindowSource
from monitor.clock import ManualClock
from monitor.config import Settings, parse_settings
from monitor.config.deployment import FINGERPRINT_COMPONENTS
from monitor.deployment import fold
from monitor.fingerprint.runner import Fingerprinter
from tests.mockserver import MockProcess
from tests.receivers import ReceivedRequest, WebhookReceiver
from tests.test_fingerprint import KNOBS

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


class Rig:
    def __init__(self, engine: AsyncEngine, http: aiohttp.ClientSession, hook: WebhookReceiver, mock: MockProcess):
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        self.hook, self.clock = hook, ManualClock(T0)
        self.settings: Settings = parse_settings({
            "targets": [{"name": "mock", "base_url": mock.base_url, "model": "glm-4-9b-chat", "doctor": {}}],
            "rules": [{"name": "deployment-drift", "kind": "drift"}],
            "receivers": [{"name": "ops", "url": hook.url}],
        })  # fmt: skip
        outbox = Outbox(sessionmaker)
        self.alerts = AlertEngine(
            self.settings, sessionmaker, source=RawWindowSource(sessionmaker), clock=self.clock, outbox=outbox
        )
        self.dispatcher = Dispatcher(
            self.settings, sessionmaker, http, clock=self.clock, secrets={}, rng=random.Random(1)
        )
        self.fingerprinter = Fingerprinter(sessionmaker, http)

    async def run(self) -> list[ReceivedRequest]:
        """One scheduled fingerprint an hour later, its observations into the engine, what was delivered."""
        self.clock.advance(3600)
        target = self.settings.targets[0]
        assert target.doctor is not None
        observations = await self.fingerprinter.run(target, target.doctor.fingerprint, None, now=self.clock.now())
        # As the scheduled doctor hands them over: folded, one change one alert.
        await self.alerts.on_deployment(fold(observations))
        before = len(self.hook.received)
        await self.dispatcher.dispatch_due()
        return self.hook.received[before:]


@pytest.fixture(name="rig")
async def fix_rig(mock: MockProcess, engine: AsyncEngine) -> AsyncIterator[Rig]:
    async with aiohttp.ClientSession() as http, WebhookReceiver() as hook:
        yield Rig(engine, http, hook, mock)


def _alerts(requests: list[ReceivedRequest]) -> list[tuple[str, str]]:
    """(status, component) of every delivered alert."""
    out = []
    for request in requests:
        alert: dict[str, Any] = request.json["alert"]
        out.append((request.json["status"], alert["labels"]["component"]))
    return sorted(out)


async def test_an_unchanged_mock_never_notifies(rig: Rig) -> None:
    for _ in range(12):
        assert await rig.run() == []


@pytest.mark.parametrize(("knob", "expected"), KNOBS, ids=[next(iter(k)) for k, _ in KNOBS])
async def test_each_knob_notifies_its_drift_and_resolves(
    rig: Rig, mock: MockProcess, knob: dict[str, Any], expected: set[str]
) -> None:
    assert await rig.run() == []  # the baseline
    mock.configure(**knob)
    (fired,) = await rig.run()  # exactly one alert, named after the most fundamental changed component
    cause = min(expected, key=FINGERPRINT_COMPONENTS.index)
    assert _alerts([fired]) == [("firing", cause)]
    annotations = fired.json["alert"]["annotations"]
    assert "drifted from the baseline" in annotations["summary"]
    for other in expected - {cause}:
        assert other in annotations["summary"]  # "also changed: ..."
    assert annotations["diff"]
    assert await rig.run() == []  # still drifted: no repeat within the repeat interval
    mock.reset()
    assert _alerts(await rig.run()) == [("resolved", cause)]
