"""A webhook receiver down for five minutes, on a hand-moved clock: nothing lost, nothing out of order.

The dispatcher runs with the daemon's own backoff settings (1 s doubling up to 300 s, with jitter),
against a real receiver on 127.0.0.1 and a real database. The clock moves one second per round, so
five minutes of outage take a few hundred dispatch rounds, not five minutes.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from monitor.alerts.dispatch import Dispatcher
from tests.receivers import WebhookReceiver
from tests.test_notify import LABELS, Rig, _rig, receivers_settings, snapshot

OUTAGE_S = 300
# The daemon's Dispatcher defaults: after a long outage the next attempt is at most this far off.
BACKOFF_MAX_S = 300
RECEIVERS = ("ops", "chat")


@pytest.fixture(name="rig")
async def fix_rig(db_url: str) -> AsyncIterator[Rig]:
    async for rig in _rig(db_url):
        yield rig


def _alerts() -> dict[str, dict[str, str]]:
    return {name: {**LABELS, "alertname": name} for name in ("ttft", "errors", "absent")}


async def test_five_minute_receiver_outage_delivers_everything_in_order_with_keys(rig: Rig) -> None:
    alerts = _alerts()
    # (second of the outage, alert, status): a flapping alert, a second one, one that starts later.
    events = [
        (0, "ttft", "firing"), (0, "errors", "firing"), (60, "ttft", "resolved"), (120, "absent", "firing"),
        (180, "ttft", "firing"), (240, "errors", "resolved"), (290, "ttft", "resolved"),
    ]  # fmt: skip
    async with WebhookReceiver() as hook:
        settings = receivers_settings(
            {"name": "ops", "url": hook.url + "/ops", "format": "generic"},
            {"name": "chat", "url": hook.url + "/chat", "format": "slack"},
        )
        # The daemon's defaults (backoff_initial_s=1, backoff_max_s=300); a fixed seed for the jitter.
        dispatcher = Dispatcher(settings, rig.sessionmaker, rig.http, clock=rig.clock, secrets={}, rng=random.Random(8))
        start = rig.clock.now()
        # First half of the outage the receiver answers 503 (attempts reach it and are recorded),
        # second half it is not listening at all (connection refused).
        hook.fail_with = 503
        for second in range(OUTAGE_S):
            for _, name, status in [e for e in events if e[0] == second]:
                await rig.enqueue(snapshot(status, labels=alerts[name]), *RECEIVERS)
            if second == OUTAGE_S // 2:
                await hook.stop()
            assert await dispatcher.dispatch_due() == 0
            rig.clock.advance(1)
        assert len(hook.received) > len(RECEIVERS) * 2  # retried during the 503 half: attempts with keys
        refused_attempts = len(await rig.attempts()) - len(hook.received)
        assert refused_attempts > 0

        hook.fail_with = None
        await hook.start()
        back = rig.clock.now()
        expected = len(events) * len(RECEIVERS)
        while len(hook.delivered()) < expected and rig.clock.now() - back <= timedelta(seconds=BACKOFF_MAX_S + 5):
            await dispatcher.dispatch_due()
            rig.clock.advance(1)
        waited_s = (rig.clock.now() - back).total_seconds()

    delivered = hook.delivered()
    assert len(delivered) == expected, f"{len(delivered)} of {expected} delivered {waited_s:.0f} s after recovery"
    assert waited_s <= BACKOFF_MAX_S + 1 and (rig.clock.now() - start).total_seconds() >= OUTAGE_S
    # In order per alert and receiver: the statuses arrive as the alert went through them.
    for receiver in RECEIVERS:
        for name in alerts:
            got = [_status(r.json) for r in delivered if r.path == f"/hook/{receiver}" and _alert(r.json) == name]
            assert got == [status for _, n, status in events if n == name], (receiver, name)
    # Every message has its own key, sent with every attempt: a receiver can drop the duplicates.
    keys = [r.headers["Idempotency-Key"] for r in delivered]
    assert len(set(keys)) == expected and all(keys)
    assert all(r.json["idempotency_key"] == r.headers["Idempotency-Key"] for r in delivered if "ops" in r.path)
    failed_keys = {r.headers["Idempotency-Key"] for r in hook.received if r.answered == 503}
    assert failed_keys <= set(keys)  # a retried message kept its key
    by_key: dict[str, list[int]] = defaultdict(list)
    for r in hook.received:
        by_key[r.headers["Idempotency-Key"]].append(r.answered)
    assert all(answers.count(200) == 1 for answers in by_key.values())  # delivered once, never again
    assert await rig.outbox.depth() == 0
    assert {state for _, state, _ in await rig.states()} == {"delivered"}


def _status(body: dict[str, object]) -> str:
    if "status" in body:
        return str(body["status"])
    text = str(body["text"])  # slack
    return "firing" if "[FIRING]" in text else "resolved"


def _alert(body: dict[str, object]) -> str:
    if "alert" in body:
        alert = body["alert"]
        assert isinstance(alert, dict)
        return str(alert["name"])
    text = str(body["text"])
    return text.split("] ", 1)[1].split(" on ", 1)[0]
