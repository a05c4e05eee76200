"""Notifications: every payload format, signatures, escaping, and durable delivery to real receivers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.alerts.clock import ManualClock
from monitor.alerts.dispatch import Dispatcher, external_url
from monitor.alerts.formats import ALERTMANAGER_ZERO_TIME, build_payload, escape_markdown, escape_slack
from monitor.alerts.model import AlertSnapshot, Notification, fingerprint
from monitor.alerts.outbox import Outbox
from monitor.alerts.signing import dingtalk_sign, feishu_sign, sign, verify_signature
from monitor.config import Settings, parse_settings
from monitor.store import create_engine, upgrade
from monitor.store.models_alerts import DeliveryAttemptRow, OutboxRow
from tests.receivers import WebhookReceiver

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
HOSTILE = (
    "<script>alert(1)</script> <img src=x onerror=alert(2)> [click](http://evil.example) "
    "![img](http://evil.example/x.png) <!channel> <http://evil.example|bank> `code` *bold* & more\nsecond line"
)
LABELS = {"alertname": "high-ttft", "probe": "chat-hello", "target": "glm4", "severity": "critical", "team": "llm"}


def snapshot(status: str = "firing", *, labels: dict[str, str] | None = None, **kw: Any) -> AlertSnapshot:
    labels = labels or LABELS
    fields: dict[str, Any] = {
        "name": labels["alertname"], "status": status, "labels": labels,
        "annotations": {"summary": "TTFT p95 812.3 ms on chat-hello", "description": "reply: " + HOSTILE},
        "severity": labels.get("severity", "warning"), "value": 812.345, "threshold": 500.0, "started_at": T0,
        "ended_at": T0 + timedelta(minutes=5) if status == "resolved" else None, "fingerprint": fingerprint(labels),
        "state": status,
    }  # fmt: skip
    fields.update(kw)
    return AlertSnapshot(**fields)


def notification(status: str = "firing", **kw: Any) -> Notification:
    return Notification("key-123", "ops", snapshot(status, **kw), T0 + timedelta(seconds=1), "http://mon.example:9464")


def strings(value: Any) -> Iterator[tuple[dict[str, Any] | None, str]]:
    """Every string in a JSON document, with the object that holds it."""
    if isinstance(value, dict):
        for item in value.values():
            if isinstance(item, str):
                yield value, item
            else:
                yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from (strings(item) if not isinstance(item, str) else [(None, item)])


# --- formats ---------------------------------------------------------------------------------------


def test_generic_payload_is_the_documented_schema() -> None:
    payload = build_payload("generic", notification())
    assert payload == {
        "version": "1",
        "idempotency_key": "key-123",
        "status": "firing",
        "receiver": "ops",
        "alert": {
            "name": "high-ttft", "status": "firing", "state": "firing", "labels": LABELS,
            "annotations": snapshot().annotations, "severity": "critical", "value": 812.345, "threshold": 500.0,
            "started_at": "2026-11-25T10:00:00Z", "ended_at": None, "fingerprint": fingerprint(LABELS),
            "probe": "chat-hello", "target": "glm4",
        },
        "generated_at": "2026-11-25T10:00:01Z",
        "external_url": "http://mon.example:9464",
    }  # fmt: skip
    resolved = build_payload("generic", notification("resolved"))
    assert resolved["status"] == "resolved" and resolved["alert"]["ended_at"] == "2026-11-25T10:05:00Z"


def test_alertmanager_payload_is_webhook_v4() -> None:
    firing = build_payload("alertmanager", notification())
    assert set(firing) == {
        "version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels",
        "commonAnnotations", "externalURL", "alerts",
    }  # fmt: skip
    assert firing["version"] == "4" and firing["truncatedAlerts"] == 0
    assert firing["groupKey"] == '{}:{alertname="high-ttft", probe="chat-hello"}'
    assert firing["groupLabels"] == {"alertname": "high-ttft", "probe": "chat-hello"}
    assert (firing["status"], firing["receiver"], firing["externalURL"]) == ("firing", "ops", "http://mon.example:9464")
    assert firing["commonLabels"] == LABELS and firing["commonAnnotations"] == snapshot().annotations
    (alert,) = firing["alerts"]
    assert alert == {
        "status": "firing", "labels": LABELS, "annotations": snapshot().annotations,
        "startsAt": "2026-11-25T10:00:00Z", "endsAt": ALERTMANAGER_ZERO_TIME,
        "generatorURL": "http://mon.example:9464/api/v1/alerts", "fingerprint": fingerprint(LABELS),
    }  # fmt: skip
    (resolved,) = build_payload("alertmanager", notification("resolved"))["alerts"]
    assert (resolved["status"], resolved["endsAt"]) == ("resolved", "2026-11-25T10:05:00Z")
    for stamp in (alert["startsAt"], resolved["endsAt"]):
        assert datetime.fromisoformat(stamp.replace("Z", "+00:00")).tzinfo is not None


def test_slack_has_text_and_blocks_and_escapes_hostile_text() -> None:
    payload = build_payload("slack", notification())
    assert payload["text"].startswith(":red_circle: [FIRING] high-ttft on chat-hello: TTFT p95")
    types = [block["type"] for block in payload["blocks"]]
    assert types == ["header", "section", "section", "context"]
    assert payload["blocks"][0]["text"] == {"type": "plain_text", "text": "[FIRING] high-ttft on chat-hello",
                                            "emoji": True}  # fmt: skip
    mrkdwn = [text for holder, text in strings(payload) if holder is not None and holder.get("type") == "mrkdwn"]
    body = "\n".join(mrkdwn)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "&lt;!channel&gt;" in body and "&amp; more" in body
    # The only link is ours.
    assert [t for t in mrkdwn if "<" in t] == [
        f"fingerprint {fingerprint(LABELS)} · id key-123 · <http://mon.example:9464|llm-monitor>"
    ]
    assert escape_slack("<a href='x'>&</a>") == "&lt;a href='x'&gt;&amp;&lt;/a&gt;"


def test_feishu_card_carries_untrusted_text_only_as_plain_text() -> None:
    payload = build_payload("feishu", notification())
    assert payload["msg_type"] == "interactive"
    card = payload["card"]
    assert card["header"]["template"] == "red"
    assert card["header"]["title"] == {"tag": "plain_text", "content": "[FIRING] high-ttft on chat-hello"}
    assert "lark_md" not in json.dumps(payload) and '"markdown"' not in json.dumps(payload)
    holders = [holder for holder, text in strings(payload) if "<script>" in text]
    assert holders and all(holder is not None and holder.get("tag") == "plain_text" for holder in holders)
    assert build_payload("feishu", notification("resolved"))["card"]["header"]["template"] == "green"
    assert "id key-123" in card["elements"][-1]["elements"][0]["content"]


@pytest.mark.parametrize("fmt", ["dingtalk", "wecom"])
def test_markdown_robots_neutralise_html_and_links(fmt: str) -> None:
    payload = build_payload(fmt, notification())
    assert payload["msgtype"] == "markdown"
    text = payload["markdown"]["text"] if fmt == "dingtalk" else payload["markdown"]["content"]
    assert "<script" not in text and "<img" not in text and "<!channel" not in text and "<http" not in text
    assert "](http" not in text and "`code`" not in text
    assert "&lt;script&gt;" in text and r"\[click\]\(http://evil.example\)" in text
    assert "second line" in text and "more second line" in text  # folded onto one line
    assert "id key-123" in text
    if fmt == "dingtalk":
        assert payload["markdown"]["title"] == "[FIRING] high-ttft on chat-hello"
        assert text.startswith(r"### \[FIRING\] high-ttft on chat-hello")
    else:
        assert text.startswith('<font color="warning">')
        assert "<" not in text.replace('<font color="warning">', "").replace("</font>", "")


def test_wecom_content_stays_under_its_byte_limit() -> None:
    huge = snapshot(annotations={f"note{i}": "长" * 900 for i in range(10)})
    content = build_payload("wecom", Notification("k", "ops", huge, T0, ""))["markdown"]["content"]
    assert len(content.encode()) <= 4096


def test_escape_markdown() -> None:
    assert escape_markdown("[a](b) *c* <d> & e\nf") == r"\[a\]\(b\) \*c\* &lt;d&gt; &amp; e f"


# --- signatures ------------------------------------------------------------------------------------


def test_our_signature_round_trips_and_rejects_tampering() -> None:
    body = b'{"status":"firing"}'
    header = sign("s3cret", "1764064800", body)
    expected = hmac.new(b"s3cret", b"1764064800." + body, hashlib.sha256).hexdigest()
    assert header == f"sha256={expected}"
    assert verify_signature("s3cret", "1764064800", body, header)
    assert verify_signature("s3cret", "1764064800", body.decode(), header)
    assert not verify_signature("s3cret", "1764064801", body, header)
    assert not verify_signature("s3cret", "1764064800", body + b" ", header)
    assert not verify_signature("other", "1764064800", body, header)
    assert not verify_signature("s3cret", "1764064800", body, "sha256=deadbeef")
    assert not verify_signature("s3cret", "1764064800", body, "garbage ✓")


def feishu_reference_sign(timestamp: str, secret: str) -> str:
    # Feishu's documented Python sample, verbatim in substance.
    string_to_sign = f"{timestamp}\n{secret}"
    hmac_code = hmac.new(string_to_sign.encode("utf-8"), digestmod=hashlib.sha256).digest()
    return base64.b64encode(hmac_code).decode("utf-8")


def dingtalk_reference_sign(timestamp: str, secret: str) -> str:
    # DingTalk's documented Python sample (before urllib.parse.quote_plus).
    string_to_sign = f"{timestamp}\n{secret}"
    hmac_code = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), digestmod=hashlib.sha256).digest()
    return base64.b64encode(hmac_code).decode("utf-8")


def test_platform_signatures_follow_the_documented_algorithms() -> None:
    assert feishu_sign("SEC123", 1764064800) == feishu_reference_sign("1764064800", "SEC123")
    assert dingtalk_sign("SEC123", 1764064800123) == dingtalk_reference_sign("1764064800123", "SEC123")


# --- delivery --------------------------------------------------------------------------------------


def receivers_settings(*receivers: dict[str, Any]) -> Settings:
    return parse_settings({"receivers": list(receivers), "api": {"external_url": "http://mon.example:9464/"}})


class Rig:
    """An outbox and dispatcher on a real database with a hand-moved clock."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], http: aiohttp.ClientSession) -> None:
        self.sessionmaker = sessionmaker
        self.http = http
        self.clock = ManualClock(T0)
        self.outbox = Outbox(sessionmaker)

    def dispatcher(self, settings: Settings, secrets: dict[str, str] | None = None) -> Dispatcher:
        return Dispatcher(
            settings, self.sessionmaker, self.http, clock=self.clock, secrets=secrets or {}, rng=random.Random(7),
            backoff_initial_s=1.0, backoff_max_s=60.0,
        )  # fmt: skip

    async def enqueue(self, alert: AlertSnapshot, *receivers: str) -> None:
        async with self.sessionmaker() as session, session.begin():
            await self.outbox.enqueue(session, alert, receivers, now=self.clock.now())

    async def attempts(self) -> list[tuple[int, bool, int | None, str | None]]:
        async with self.sessionmaker() as session:
            rows = (await session.scalars(select(DeliveryAttemptRow).order_by(DeliveryAttemptRow.id))).all()
            return [(r.message_id, r.ok, r.http_status, r.error) for r in rows]

    async def states(self) -> list[tuple[str, str, int]]:
        return [(m.status, m.state, m.attempts) for m in await self.outbox.messages()]


async def _rig(url: str) -> AsyncIterator[Rig]:
    engine = create_engine(url)
    http = aiohttp.ClientSession()
    try:
        await upgrade(engine)
        yield Rig(async_sessionmaker(engine, expire_on_commit=False), http)
    finally:
        await http.close()
        await engine.dispose()


@pytest.fixture(name="rig")
async def fix_rig(sqlite_db_url: str) -> AsyncIterator[Rig]:
    async for rig in _rig(sqlite_db_url):
        yield rig


@pytest.fixture(name="any_rig")
async def fix_any_rig(db_url: str) -> AsyncIterator[Rig]:
    """On SQLite and PostgreSQL: for the tests whose SQL (claims, order, restarts) matters per backend."""
    async for rig in _rig(db_url):
        yield rig


@pytest.fixture(name="hook")
async def fix_hook() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as hook:
        yield hook


async def test_delivery_is_signed_keyed_and_recorded(any_rig: Rig, hook: WebhookReceiver) -> None:
    rig = any_rig
    settings = receivers_settings(
        {"name": "ops", "url": hook.url, "secret_env": "OPS_SECRET", "headers": {"X-Team": "llm"}}
    )
    dispatcher = rig.dispatcher(settings, {"ops": "s3cret"})
    await rig.enqueue(snapshot(), "ops")
    assert await rig.outbox.depth() == 1
    assert await dispatcher.dispatch_due() == 1

    (request,) = hook.received
    (message,) = await rig.outbox.messages()
    assert request.headers["Idempotency-Key"] == message.idempotency_key == request.json["idempotency_key"]
    assert request.headers["Content-Type"].startswith("application/json") and request.headers["X-Team"] == "llm"
    timestamp = request.headers["X-LLM-Monitor-Timestamp"]
    assert timestamp == str(int(T0.timestamp()))
    expected = hmac.new(b"s3cret", timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-LLM-Monitor-Signature"] == f"sha256={expected}"
    assert verify_signature("s3cret", timestamp, request.body, request.headers["X-LLM-Monitor-Signature"])
    assert request.json["external_url"] == "http://mon.example:9464"
    assert (message.state, message.attempts, message.delivered_at) == ("delivered", 1, T0)
    assert await rig.attempts() == [(message.id, True, 200, None)]
    assert await rig.outbox.depth() == 0
    assert await dispatcher.dispatch_due() == 0


async def test_receiver_down_then_back_delivers_everything_in_order(any_rig: Rig, hook: WebhookReceiver) -> None:
    rig = any_rig
    settings = receivers_settings({"name": "ops", "url": hook.url, "format": "alertmanager"})
    dispatcher = rig.dispatcher(settings)
    other = {**LABELS, "probe": "completion"}
    await rig.enqueue(snapshot("firing"), "ops")
    await rig.enqueue(snapshot("firing", labels=other), "ops")
    rig.clock.advance(1)
    await rig.enqueue(snapshot("resolved"), "ops")

    hook.fail_with = 500
    assert await dispatcher.dispatch_due() == 0
    # Both firings were tried; the resolved waits for its firing.
    assert await rig.states() == [("firing", "pending", 1), ("firing", "pending", 1), ("resolved", "pending", 0)]
    await hook.stop()
    rig.clock.advance(5)
    assert await dispatcher.dispatch_due() == 0
    attempts = await rig.attempts()
    assert [(ok, status) for _, ok, status, _ in attempts] == [(False, 500)] * 2 + [(False, None)] * 2
    assert attempts[0][3] == "HTTP 500: receiver failing on purpose"
    assert attempts[-1][3] is not None and "Connect" in attempts[-1][3] and hook.url not in attempts[-1][3]

    hook.fail_with = None
    await hook.start()
    rig.clock.advance(0.5)  # not yet due: the second backoff is 1-2 s
    assert await dispatcher.dispatch_due() == 0
    rig.clock.advance(10)
    assert await dispatcher.dispatch_due() == 3
    delivered = [(r.json["status"], r.json["alerts"][0]["labels"]["probe"]) for r in hook.delivered()]
    assert delivered == [("firing", "chat-hello"), ("firing", "completion"), ("resolved", "chat-hello")]
    # The idempotency key of a message is the same on every attempt that reached the receiver.
    first_key = hook.received[0].headers["Idempotency-Key"]
    assert [(r.answered, r.headers["Idempotency-Key"]) for r in hook.received].count((500, first_key)) == 1
    assert hook.delivered()[0].headers["Idempotency-Key"] == first_key
    assert await rig.states() == [("firing", "delivered", 3), ("firing", "delivered", 3), ("resolved", "delivered", 1)]


async def test_pending_messages_survive_a_new_dispatcher(any_rig: Rig, hook: WebhookReceiver) -> None:
    rig = any_rig
    settings = receivers_settings({"name": "ops", "url": hook.url})
    hook.fail_with = 503
    await rig.enqueue(snapshot(), "ops")
    assert await rig.dispatcher(settings).dispatch_due() == 0

    hook.fail_with = None
    rig.clock.advance(60)
    assert await rig.dispatcher(settings).dispatch_due() == 1  # a restarted daemon's dispatcher
    assert [r.answered for r in hook.received] == [503, 200]
    assert len({r.headers["Idempotency-Key"] for r in hook.received}) == 1


async def test_two_dispatchers_never_send_a_message_twice(any_rig: Rig, hook: WebhookReceiver) -> None:
    rig = any_rig
    settings = receivers_settings({"name": "ops", "url": hook.url})
    for i in range(6):
        await rig.enqueue(snapshot(labels={**LABELS, "probe": f"p{i}"}), "ops")
    first, second = rig.dispatcher(settings), rig.dispatcher(settings)
    counts = await asyncio.gather(first.dispatch_due(), second.dispatch_due())
    assert sum(counts) == 6 and len(hook.received) == 6
    assert sorted(r.json["alert"]["probe"] for r in hook.received) == [f"p{i}" for i in range(6)]


async def test_gives_up_after_max_age_and_on_permanent_errors(rig: Rig, hook: WebhookReceiver) -> None:
    settings = receivers_settings({"name": "ops", "url": hook.url, "max_age_s": 30})
    dispatcher = rig.dispatcher(settings)
    hook.fail_with = 502
    await rig.enqueue(snapshot(), "ops")
    for _ in range(10):
        await dispatcher.dispatch_due()
        rig.clock.advance(20)
    (message,) = await rig.outbox.messages()
    assert message.state == "failed" and message.last_error == "HTTP 502: receiver failing on purpose"
    assert 2 <= message.attempts <= 6  # retried with backoff, one last time at the age limit

    hook.fail_with = 404  # a permanent error: no retries, and the next message of the alert goes ahead
    await rig.enqueue(snapshot("firing", labels={**LABELS, "probe": "x"}), "ops")
    rig.clock.advance(1)
    await rig.enqueue(snapshot("resolved", labels={**LABELS, "probe": "x"}), "ops")
    await dispatcher.dispatch_due()
    assert [(m.state, m.attempts) for m in await rig.outbox.messages()][1:] == [("failed", 1), ("failed", 1)]


async def test_platform_error_in_a_200_body_is_retried(rig: Rig, hook: WebhookReceiver) -> None:
    settings = receivers_settings({"name": "ding", "url": hook.url + "?access_token=t0ken", "format": "dingtalk"})
    dispatcher = rig.dispatcher(settings)
    hook.reply = {"errcode": 310000, "errmsg": "sign not match"}
    await rig.enqueue(snapshot(), "ding")
    assert await dispatcher.dispatch_due() == 0
    (message,) = await rig.outbox.messages()
    assert message.state == "pending" and message.last_error == "HTTP 200 with dingtalk error 310000: sign not match"
    hook.reply = {"errcode": 0, "errmsg": "ok"}
    rig.clock.advance(5)
    assert await dispatcher.dispatch_due() == 1


async def test_feishu_and_dingtalk_signing_verify_at_the_receiver(rig: Rig, hook: WebhookReceiver) -> None:
    settings = receivers_settings(
        {"name": "feishu", "url": hook.url, "format": "feishu", "secret_env": "F"},
        {"name": "ding", "url": hook.url + "?access_token=t0ken", "format": "dingtalk", "secret_env": "D"},
        {"name": "wecom", "url": hook.url + "?key=k3y", "format": "wecom"},
    )
    dispatcher = rig.dispatcher(settings, {"feishu": "feishu-secret", "ding": "ding+secret/="})
    await rig.enqueue(snapshot(), "feishu", "ding", "wecom")
    assert await dispatcher.dispatch_due() == 3
    by_format = {("feishu" if "msg_type" in r.json else r.json["msgtype"] + str(r.query)): r for r in hook.received}
    feishu = hook.received[0].json
    assert feishu["timestamp"] == str(int(T0.timestamp()))
    assert feishu["sign"] == feishu_reference_sign(feishu["timestamp"], "feishu-secret")
    ding = next(r for r in hook.received if "sign" in r.query)
    assert ding.query["access_token"] == "t0ken" and ding.query["timestamp"] == str(int(T0.timestamp() * 1000))
    assert ding.query["sign"] == dingtalk_reference_sign(ding.query["timestamp"], "ding+secret/=")
    assert verify_signature("ding+secret/=", ding.headers["X-LLM-Monitor-Timestamp"], ding.body,
                            ding.headers["X-LLM-Monitor-Signature"])  # fmt: skip
    wecom = next(r for r in hook.received if r.query.get("key") == "k3y")
    assert "X-LLM-Monitor-Signature" not in wecom.headers and wecom.json["msgtype"] == "markdown"
    assert len(by_format) == 3


async def test_message_for_a_removed_receiver_is_dropped(rig: Rig, hook: WebhookReceiver) -> None:
    await rig.enqueue(snapshot(), "gone")
    await rig.dispatcher(receivers_settings({"name": "ops", "url": hook.url})).dispatch_due()
    (message,) = await rig.outbox.messages()
    assert (message.state, message.last_error) == ("dropped", "receiver 'gone' is no longer configured")
    assert await rig.outbox.purge(older_than=rig.clock.now() + timedelta(seconds=1)) == 1


async def test_run_delivers_soon_after_wake_and_stops(rig: Rig, hook: WebhookReceiver) -> None:
    dispatcher = rig.dispatcher(receivers_settings({"name": "ops", "url": hook.url}))
    rig.outbox.add_waker(dispatcher.wake)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        await asyncio.sleep(0.1)
        async with rig.sessionmaker() as session, session.begin():
            await rig.outbox.enqueue(session, snapshot(), ["ops"], now=rig.clock.now())
        rig.outbox.notify_committed()
        await hook.wait_for(1, timeout_s=10)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert task.done() and task.exception() is None


def test_external_url_defaults_to_the_api_address() -> None:
    assert external_url("127.0.0.1", 9464, None) == "http://127.0.0.1:9464"
    assert external_url("0.0.0.0", 9464, None) == "http://127.0.0.1:9464"
    assert external_url("::1", 9464, "https://mon.example/") == "https://mon.example"


async def test_a_crashed_senders_claim_expires(rig: Rig, hook: WebhookReceiver) -> None:
    settings = receivers_settings({"name": "ops", "url": hook.url, "timeout_s": 5})
    await rig.enqueue(snapshot(), "ops")
    # A dispatcher claimed the message and died before recording anything (kill -9 mid-send).
    async with rig.sessionmaker() as session, session.begin():
        await session.execute(update(OutboxRow).values(claimed_until=rig.clock.now() + timedelta(seconds=60)))
    dispatcher = rig.dispatcher(settings)
    assert await dispatcher.dispatch_due() == 0 and hook.received == []
    rig.clock.advance(61)
    assert await dispatcher.dispatch_due() == 1


async def test_run_survives_a_broken_database(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'not-migrated.db'}")
    try:
        async with aiohttp.ClientSession() as http:
            dispatcher = Dispatcher(
                receivers_settings(), async_sessionmaker(engine), http, clock=ManualClock(T0), secrets={},
                poll_interval_s=0.05,
            )  # fmt: skip
            stop = asyncio.Event()
            task = asyncio.create_task(dispatcher.run(stop))
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.wait_for(task, timeout=10)
    finally:
        await engine.dispose()
    assert task.exception() is None
    assert any("outbox unavailable (no such table: outbox)" in r.getMessage() for r in caplog.records)
