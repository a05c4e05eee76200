"""The AlertEngine under a controllable clock, on real databases: states, notifications in the outbox, restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.alerts.clock import ManualClock
from monitor.alerts.engine import AlertEngine
from monitor.alerts.outbox import Outbox
from monitor.alerts.source import RawWindowSource
from monitor.config import Settings, parse_settings
from monitor.meter import StreamMeasurement
from monitor.results import CheckResult, ProbeResult
from monitor.store import Store, create_engine, upgrade

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
BASE: dict[str, Any] = {
    "targets": [{"name": "glm4", "base_url": "http://127.0.0.1:8000/v1"}, {"name": "qwen", "base_url": "http://q/v1"}],
    "probes": [
        {"name": "chat", "target": "glm4", "messages": [{"role": "user", "content": "你好"}]},
        {"name": "completion", "target": "glm4", "endpoint": "completion", "prompt": "你好"},
        {"name": "qchat", "target": "qwen", "messages": [{"role": "user", "content": "hi"}]},
    ],
    "receivers": [
        {"name": "ops", "url": "http://127.0.0.1:9/ops"},
        {"name": "pager", "url": "http://127.0.0.1:9/pager", "send_resolved": False},
    ],
}
TTFT = {"name": "high-ttft", "kind": "threshold", "metric": "ttft_ms", "agg": "p95", "window_s": 300, "op": ">",
        "value": 500, "scope": {"probe": "chat"}}  # fmt: skip


def make_settings(*rules: dict[str, Any], **sections: Any) -> Settings:
    return parse_settings({**BASE, "rules": list(rules), **sections})


def measurement(ttft_ms: float, tokens: int) -> StreamMeasurement:
    return StreamMeasurement(
        endpoint="chat", stream=True, text="你好！", ttft_ms=ttft_ms, latency_ms=ttft_ms + 100.0, itl_ms=(10.0,),
        chunk_count=3, content_chunk_count=2, prompt_tokens=5, completion_tokens=tokens, tokens_estimated=False,
        itl_per_token_exact=True, finish_reason="stop", stop_reason=None, done_seen=True, error_kind=None,
        error_detail=None,
    )  # fmt: skip


class Harness:
    """A store, an outbox and an engine on one database, with a hand-moved clock."""

    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker
        self.clock = ManualClock(T0)
        self.store = Store(sessionmaker)
        self.outbox = Outbox(sessionmaker)
        self.woken = 0
        self.outbox.add_waker(self._woken)
        self.engine = self.new_engine(settings)

    def _woken(self) -> None:
        self.woken += 1

    def new_engine(self, settings: Settings) -> AlertEngine:
        """A fresh engine on the same database (a daemon restart)."""
        return AlertEngine(
            settings, self.sessionmaker, source=RawWindowSource(self.sessionmaker), clock=self.clock,
            outbox=self.outbox, baseline_cache_s=0,
        )  # fmt: skip

    async def result(
        self, probe: str = "chat", *, ttft_ms: float = 100.0, tokens: int = 20, error: str | None = None,
        ago_s: float = 0.5, evaluate: bool = True, checks: tuple[CheckResult, ...] = (),
    ) -> None:  # fmt: skip
        """Store one result that started `ago_s` before now, and tell the engine (as the daemon does)."""
        target = "qwen" if probe == "qchat" else "glm4"
        result = ProbeResult(
            probe=probe, target=target, endpoint="chat", stream=True,
            started_at=self.clock.now() - timedelta(seconds=ago_s), max_tokens=64, http_status=500 if error else 200,
            error_kind="http_error" if error else None, error_detail=error,
            measurement=None if error else measurement(ttft_ms, tokens), checks=checks,
        )  # fmt: skip
        await self.store.add_results([result])
        if evaluate:
            await self.engine.on_result(result)

    async def sent(self) -> list[tuple[str, str, str | None]]:
        """(status, receiver, probe) of every queued notification, in write order."""
        return [(m.status, m.receiver, m.alert.probe) for m in await self.outbox.messages()]

    async def states(self) -> dict[str | None, str]:
        return {v.probe: v.state for v in await self.engine.alerts(include_inactive=True)}


@pytest.fixture(name="sessionmaker")
async def fix_sessionmaker(sqlite_db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async with _migrated(sqlite_db_url) as sessionmaker:
        yield sessionmaker


@pytest.fixture(name="any_sessionmaker")
async def fix_any_sessionmaker(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """SQLite and PostgreSQL."""
    async with _migrated(db_url) as sessionmaker:
        yield sessionmaker


class _migrated:
    def __init__(self, url: str) -> None:
        self._engine = create_engine(url)

    async def __aenter__(self) -> async_sessionmaker[AsyncSession]:
        await upgrade(self._engine)
        # The default (expiring) sessionmaker, as a caller might pass: the engine must not depend on it.
        return async_sessionmaker(self._engine)

    async def __aexit__(self, *exc: object) -> None:
        await self._engine.dispose()


async def test_threshold_pending_firing_resolved(any_sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    rule = {**TTFT, "for_s": 60, "min_samples": 2, "annotations": {"summary": "TTFT p95 {value} ms on {probe}"}}
    h = Harness(make_settings(rule), any_sessionmaker)
    await h.engine.start()

    await h.result(ttft_ms=900)
    assert await h.states() == {}  # one sample < min_samples: nothing happens
    h.clock.advance(10)
    await h.result(ttft_ms=900)
    assert await h.states() == {"chat": "pending"}
    h.clock.advance(30)
    await h.engine.evaluate_all()
    assert await h.states() == {"chat": "pending"} and await h.sent() == []

    h.clock.advance(30)  # 60 s since it became pending
    await h.engine.evaluate_all()
    (view,) = await h.engine.alerts()
    assert (view.state, view.fired_at, view.value, view.threshold) == ("firing", h.clock.now(), 900.0, 500.0)
    assert view.labels == {"alertname": "high-ttft", "probe": "chat", "target": "glm4", "severity": "warning"}
    assert view.annotations == {"summary": "TTFT p95 900 ms on chat"} and not view.silenced
    assert await h.sent() == [("firing", "ops", "chat"), ("firing", "pager", "chat")]
    assert h.woken == 1
    (message, _) = await h.outbox.messages()
    assert message.alert.started_at == view.fired_at and message.alert.ended_at is None

    # The slow results leave the window; two fast ones resolve it (resolved goes only where wanted).
    h.clock.advance(300)
    await h.result(ttft_ms=100)
    await h.result(ttft_ms=120)
    (view,) = await h.engine.alerts()
    assert (view.state, view.resolved_at) == ("resolved", h.clock.now())
    assert await h.sent() == [("firing", "ops", "chat"), ("firing", "pager", "chat"), ("resolved", "ops", "chat")]
    resolved = (await h.outbox.messages())[-1]
    assert resolved.alert.ended_at == h.clock.now() and resolved.alert.status == "resolved"


async def test_keep_firing_for_holds_an_alert_through_a_brief_recovery(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    h = Harness(make_settings({**TTFT, "window_s": 30, "keep_firing_for_s": 120}), sessionmaker)
    await h.result(ttft_ms=900)
    assert await h.states() == {"chat": "firing"}
    h.clock.advance(60)
    await h.result(ttft_ms=100)  # clear, but within keep_firing_for
    h.clock.advance(60)
    await h.result(ttft_ms=900)  # back: the clear period starts over
    h.clock.advance(60)
    await h.result(ttft_ms=100)
    h.clock.advance(100)
    await h.engine.evaluate_all()
    assert await h.states() == {"chat": "firing"}
    h.clock.advance(20)
    await h.engine.evaluate_all()
    assert await h.states() == {"chat": "resolved"}
    assert [s for s, _, _ in await h.sent()] == ["firing", "firing", "resolved"]  # ops, pager, ops


async def test_repeat_interval_renotifies(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    rule = {**TTFT, "window_s": 3600, "repeat_interval_s": 600, "receivers": ["ops"]}
    h = Harness(make_settings(rule), sessionmaker)
    await h.result(ttft_ms=900)
    for _ in range(4):
        h.clock.advance(300)
        await h.engine.evaluate_all()
    assert await h.sent() == [("firing", "ops", "chat")] * 3  # at 0, 600 and 1200 s
    keys = {m.idempotency_key for m in await h.outbox.messages()}
    assert len(keys) == 3


async def test_silence_holds_notifications_until_it_expires(any_sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    h = Harness(make_settings({**TTFT, "window_s": 3600, "receivers": ["ops"]}), any_sessionmaker)
    silence = await h.engine.add_silence(
        matchers={"rule": "high-ttft"}, duration_s=7200, comment="vLLM upgrade", created_by="alice"
    )
    assert silence.matchers == {"alertname": "high-ttft"} and silence.ends_at == T0 + timedelta(hours=2)
    await h.result(ttft_ms=900)
    (view,) = await h.engine.alerts()
    assert (view.state, view.silenced, view.muted_by) == ("firing", True, f"silence {silence.id}")
    assert await h.sent() == []

    h.clock.advance(60)
    assert await h.engine.expire_silence(silence.id) is True
    assert await h.engine.expire_silence(silence.id) is False
    assert await h.engine.silences() == []
    (expired,) = await h.engine.silences(include_expired=True)
    assert expired.expired_at == h.clock.now()
    await h.engine.evaluate_all()
    assert await h.sent() == [("firing", "ops", "chat")]


async def test_silence_by_label_mutes_only_matching_probes(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    rule = {"name": "failing", "kind": "consecutive_failures", "count": 1, "receivers": ["ops"]}
    h = Harness(make_settings(rule), sessionmaker)
    await h.engine.add_silence(matchers={"target": "glm4"}, duration_s=600, comment="maintenance", created_by="bob")
    for probe in ("chat", "completion", "qchat"):
        await h.result(probe, error="HTTP 500")
    assert await h.sent() == [("firing", "ops", "qchat")]
    with pytest.raises(ValueError, match="comment"):
        await h.engine.add_silence(matchers={"target": "glm4"}, duration_s=600, comment=" ", created_by="bob")


async def test_maintenance_window_holds_firing_until_it_ends(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    # 10:00-10:10 UTC every day; T0 is 10:00.
    settings = make_settings(
        {**TTFT, "window_s": 3600, "receivers": ["ops"]},
        maintenance=[{"name": "deploys", "cron": "0 10 * * *", "duration": "10m", "scope": {"target": "glm4"}}],
    )
    h = Harness(settings, sessionmaker)
    await h.result(ttft_ms=900)
    (view,) = await h.engine.alerts()
    assert (view.state, view.muted_by) == ("firing", "maintenance deploys")
    h.clock.advance(300)
    await h.engine.evaluate_all()
    assert await h.sent() == []
    h.clock.advance(300)  # 10:10: the window is over and the alert still fires
    await h.engine.evaluate_all()
    assert await h.sent() == [("firing", "ops", "chat")]


async def test_regression_compares_recent_with_baseline_window(
    any_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    rule = {"name": "ttft-creep", "kind": "regression", "metric": "ttft_ms", "agg": "mean", "window_s": 600,
            "baseline_window_s": 3600, "ratio": 1.5, "min_samples": 2, "baseline_min_samples": 3,
            "scope": {"probe": "chat"}, "receivers": ["ops"]}  # fmt: skip
    h = Harness(make_settings(rule), any_sessionmaker)
    # Baseline: 100 ms, 20-50 minutes ago (inside the hour before the recent 10 minutes).
    for ago_min in (50, 40, 30, 20):
        await h.result(ttft_ms=100, ago_s=ago_min * 60, evaluate=False)
    await h.result(ttft_ms=140)
    await h.result(ttft_ms=150)  # mean 145 < 1.5 x 100
    assert await h.states() == {}
    await h.result(ttft_ms=400)  # mean 230 >= 150
    (view,) = await h.engine.alerts()
    assert (view.state, view.value, view.threshold) == ("firing", 230.0, 150.0)
    assert "vs baseline 100 (+130.0%)" in view.annotations["summary"]


async def test_regression_delta_needs_baseline_samples(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    rule = {"name": "tokens-drop", "kind": "regression", "metric": "completion_tokens", "window_s": 600,
            "baseline_window_s": 3600, "delta": 50, "direction": "down", "baseline_min_samples": 2,
            "scope": {"probe": "chat"}}  # fmt: skip
    h = Harness(make_settings(rule), sessionmaker)
    await h.result(tokens=200, ago_s=1800, evaluate=False)
    await h.result(tokens=20)
    assert await h.states() == {}  # one baseline sample: not enough
    await h.result(tokens=200, ago_s=1200, evaluate=False)
    await h.result(tokens=20)
    assert await h.states() == {"chat": "firing"}


async def test_absence_fires_on_the_timer_and_resolves_on_a_good_result(
    any_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    rule = {"name": "silent", "kind": "absence", "absent_for_s": 300, "scope": {"target": "glm4"}, "receivers": ["ops"]}
    h = Harness(make_settings(rule), any_sessionmaker)
    await h.engine.start()
    await h.result("chat", ago_s=1)
    h.clock.advance(200)
    await h.result("completion", error="connect refused")  # a result, but not a successful one
    h.clock.advance(100)
    await h.engine.evaluate_all()
    # chat: last ok 301 s ago. completion: never ok, but watched only since the engine started 300 s ago.
    assert await h.states() == {"chat": "firing", "completion": "firing"}

    # A restart does not reset the clock of an active absence alert.
    h.engine = h.new_engine(h.engine._settings)
    await h.engine.start()
    await h.engine.evaluate_all()
    assert await h.states() == {"chat": "firing", "completion": "firing"}

    await h.result("chat")
    assert await h.states() == {"chat": "resolved", "completion": "firing"}
    assert await h.sent() == [("firing", "ops", "chat"), ("firing", "ops", "completion"), ("resolved", "ops", "chat")]


async def test_consecutive_failures_fan_out_per_probe(any_sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    rule = {"name": "failing", "kind": "consecutive_failures", "count": 3, "scope": {"target": "glm4"},
            "labels": {"team": "llm"}, "receivers": ["ops"],
            "annotations": {"description": "last error: {error}"}}  # fmt: skip
    h = Harness(make_settings(rule), any_sessionmaker)
    for _ in range(3):
        await h.result("chat", error="<script>alert(1)</script> upstream 500")
        await h.result("completion", error="HTTP 500")
        await h.result("qchat", error="HTTP 500")  # qwen is out of scope
        h.clock.advance(5)
    await h.result("completion")  # an ok result ends completion's streak
    assert await h.states() == {"chat": "firing", "completion": "resolved"}
    (view, _) = await h.engine.alerts()
    assert view.labels == {"alertname": "failing", "probe": "chat", "target": "glm4", "severity": "warning",
                           "team": "llm"}  # fmt: skip
    assert view.annotations["description"] == "last error: http_error: <script>alert(1)</script> upstream 500"
    assert view.value == 3.0
    # Failed checks count as failures too.
    failed_check = (CheckResult("run_on", False, "wrote the next user turn"),)
    for _ in range(3):
        await h.result("completion", checks=failed_check)
    assert (await h.states())["completion"] == "firing"


async def test_restart_neither_renotifies_nor_forgets(any_sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    settings = make_settings({**TTFT, "window_s": 120, "receivers": ["ops"]})
    h = Harness(settings, any_sessionmaker)
    await h.result(ttft_ms=900)
    assert await h.sent() == [("firing", "ops", "chat")]

    h.engine = h.new_engine(settings)  # the daemon restarts
    await h.engine.start()
    h.clock.advance(30)
    await h.result(ttft_ms=900)
    await h.engine.evaluate_all()
    assert await h.sent() == [("firing", "ops", "chat")]
    (view,) = await h.engine.alerts()
    assert (view.state, view.fired_at) == ("firing", T0)

    h.clock.advance(200)
    await h.result(ttft_ms=100)
    assert await h.sent() == [("firing", "ops", "chat"), ("resolved", "ops", "chat")]


async def test_reload_retires_alerts_of_removed_rules(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    failing = {"name": "failing", "kind": "consecutive_failures", "count": 1, "receivers": ["ops"]}
    h = Harness(make_settings({**TTFT, "window_s": 600, "receivers": ["ops"]}, failing), sessionmaker)
    await h.result("chat", ttft_ms=900)
    await h.result("qchat", error="HTTP 500", evaluate=True)
    assert await h.states() == {"chat": "firing", "qchat": "firing"}

    h.engine.reload(make_settings(failing))  # high-ttft removed
    await h.engine.evaluate_all()
    assert await h.sent() == [("firing", "ops", "chat"), ("firing", "ops", "qchat"), ("resolved", "ops", "chat")]
    h.clock.advance(10)
    await h.engine.evaluate_all()
    assert await h.states() == {"qchat": "firing"}  # the retired alert is forgotten after its resolution
    assert h.engine.state_counts() == {("failing", "firing"): 1}


async def test_rate_metrics_and_check_failure_rate(any_sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    rules = [
        {"name": "errors", "kind": "threshold", "metric": "error_rate", "window_s": 600, "op": ">=", "value": 0.5,
         "min_samples": 4, "scope": {"probe": "chat"}},
        {"name": "leaks", "kind": "threshold", "metric": "check_failure_rate", "check": "template_leak",
         "window_s": 600, "op": ">", "value": 0.4, "scope": {"probe": "chat"}},
    ]  # fmt: skip
    h = Harness(make_settings(*rules), any_sessionmaker)
    leak = (CheckResult("template_leak", False, "<|user|>"), CheckResult("empty_reply", True, ""))
    clean = (CheckResult("template_leak", True, ""),)
    await h.result(error="HTTP 500")
    await h.result(checks=leak)
    await h.result(checks=clean)
    await h.result(error="timeout")
    # error_rate 2/4; template_leak failed in 1 of the 2 requests that got an answer.
    views = {v.rule: v for v in await h.engine.alerts(include_inactive=True)}
    assert (views["errors"].state, views["errors"].value) == ("firing", 0.5)
    assert (views["leaks"].state, views["leaks"].value) == ("firing", 0.5)


async def test_engine_survives_an_unknown_probe_and_reports_counts(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    h = Harness(make_settings(TTFT), sessionmaker)
    result = ProbeResult(probe="ghost", target="x", endpoint="chat", stream=True, started_at=T0, max_tokens=None)
    await h.engine.on_result(replace(result))
    assert h.engine.state_counts() == {}
