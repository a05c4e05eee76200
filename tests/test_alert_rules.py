"""Alert config validation, the pure state machine, rule conditions and muting (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from monitor.alerts import rules
from monitor.alerts.model import SilenceView, fingerprint
from monitor.alerts.muting import in_window, mute_reason, normalize_matchers
from monitor.alerts.source import Aggregate, RecentResult, aggregate_values
from monitor.alerts.state import AlertRecord, Timing, advance, retire
from monitor.config import MaintenanceWindow, RuleSettings, Scope, Settings, parse_settings, resolve_receiver_secrets
from monitor.errors import ConfigError

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
BASE: dict[str, Any] = {
    "targets": [{"name": "glm4", "base_url": "http://127.0.0.1:8000/v1"}, {"name": "qwen", "base_url": "http://q/v1"}],
    "probes": [
        {"name": "chat", "target": "glm4", "messages": [{"role": "user", "content": "你好"}]},
        {"name": "completion", "target": "glm4", "endpoint": "completion", "prompt": "你好"},
        {"name": "qchat", "target": "qwen", "messages": [{"role": "user", "content": "hi"}]},
    ],
    "receivers": [{"name": "ops", "url": "http://127.0.0.1:9/hook"}],
}
TTFT = {"name": "high-ttft", "kind": "threshold", "metric": "ttft_ms", "agg": "p95", "window_s": 300, "op": ">",
        "value": 500}  # fmt: skip


def settings(**sections: Any) -> Settings:
    return parse_settings({**BASE, **sections})


def rule(**kw: Any) -> RuleSettings:
    return settings(rules=[{**TTFT, **kw}]).rules[0]


def config_error(**sections: Any) -> str:
    with pytest.raises(ConfigError) as info:
        settings(**sections)
    return str(info.value)


# --- config ----------------------------------------------------------------------------------------


def test_full_config_parses_with_prometheus_spellings() -> None:
    s = settings(
        rules=[
            {**{k: v for k, v in TTFT.items() if k != "window_s"}, "for": "2m", "keep_firing_for": "5m",
             "repeat_interval": "1h", "window": "5m",
             "labels": {"team": "llm"}, "annotations": {"summary": "TTFT {value} ms"}, "severity": "critical",
             "scope": {"target": "glm4"}, "receivers": ["ops"]},
            {"name": "ttft-creep", "kind": "regression", "metric": "ttft_ms", "agg": "p95", "window": "1h",
             "baseline_window": "7d", "ratio": 1.5, "min_samples": 10, "baseline_min_samples": 100},
            {"name": "silent", "kind": "absence", "minutes": 10, "scope": {"probe": "chat"}},
            {"name": "failing", "kind": "consecutive_failures", "count": 3, "scope": "all"},
            {"name": "leaks", "kind": "threshold", "metric": "check_failure_rate", "check": "template_leak",
             "window_s": 600, "op": ">=", "value": 0.1},
        ],
        maintenance=[{"name": "nightly", "cron": "0 2 * * *", "duration": "30m", "timezone": "Asia/Shanghai"}],
    )  # fmt: skip
    ttft, creep, silent, failing, leaks = s.rules
    assert (ttft.for_s, ttft.keep_firing_for_s, ttft.repeat_interval_s, ttft.window_s) == (120, 300, 3600, 300)
    assert ttft.scope.target == "glm4" and ttft.receivers == ["ops"] and ttft.severity == "critical"
    assert (creep.window_s, creep.baseline_window_s, creep.effective_baseline_min_samples) == (3600, 7 * 86400, 100)
    assert silent.absent_for_s == 600 and silent.scope.probe == "chat"
    assert failing.count == 3 and failing.scope.probe is None and failing.scope.target is None
    assert leaks.effective_agg == "rate" and ttft.repeat_interval_s == 3600
    assert s.maintenance[0].duration_s == 1800


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"rules": [{**TTFT, "window_s": 0}]}, "rules[0].window_s: must be > 0"),
        ({"rules": [{**TTFT, "window_s": "5 parsecs"}]}, "rules[0].window_s: '5 parsecs' is not a duration"),
        ({"rules": [{**TTFT, "op": "=="}]}, "rules[0].op: must be one of"),
        ({"rules": [{**TTFT, "metric": "vibes"}]}, "rules[0].metric: must be one of"),
        ({"rules": [{**TTFT, "severity": "page"}]}, "rules[0].severity: must be one of"),
        ({"rules": [{**TTFT, "colour": "red"}]}, "rules[0].colour: unknown field"),
        ({"rules": [{k: v for k, v in TTFT.items() if k != "value"}]}, "rules[0].value: required for a threshold rule"),
        ({"rules": [{**TTFT, "scope": {"probe": "nope"}}]}, "rules[0].scope.probe: unknown probe 'nope' (known: chat,"),
        ({"rules": [{**TTFT, "scope": {"target": "nope"}}]}, "rules[0].scope.target: unknown target 'nope'"),
        ({"rules": [{**TTFT, "scope": {"probe": "chat", "target": "glm4"}}]}, "rules[0].scope: give probe or target"),
        ({"rules": [{**TTFT, "scope": "everything"}]}, "rules[0].scope: must be all, {probe: NAME}"),
        ({"rules": [TTFT, {**TTFT, "receivers": ["ops", "pager"]}]}, "rules[1].name: duplicate name 'high-ttft'"),
        ({"rules": [{**TTFT, "receivers": ["ops", "pager"]}]}, "rules[0].receivers[1]: unknown receiver 'pager'"),
        ({"rules": [{**TTFT, "labels": {"probe": "x"}}]}, "rules[0].labels: label 'probe' is set by llm-monitor"),
        ({"rules": [{**TTFT, "labels": {"bad-key": "x"}}]}, "rules[0].labels: label name 'bad-key' must match"),
        ({"rules": [{**TTFT, "count": 3}]}, "rules[0].count: not used by a threshold rule"),
        ({"rules": [{**TTFT, "agg": "rate"}]}, "rules[0].agg: rate does not apply to ttft_ms"),
        ({"rules": [{**TTFT, "metric": "error_rate"}]}, "rules[0].agg: p95 does not apply to error_rate"),
        ({"rules": [{**TTFT, "metric": "check_failure_rate", "agg": None}]}, "rules[0].check: required for metric"),
        ({"rules": [{**TTFT, "for": "1m", "for_s": 60}]}, "rules[0]: give for_s or for, not both"),
        ({"rules": [{"name": "r", "kind": "regression", "metric": "ttft_ms", "window_s": 60,
                     "baseline_window_s": 600}]}, "rules[0]: a regression rule needs ratio or delta"),
        ({"rules": [{"name": "r", "kind": "regression", "metric": "ttft_ms", "window_s": 60,
                     "baseline_window_s": 600, "ratio": 0.5}]}, "rules[0].ratio: must be > 1"),
        ({"rules": [{"name": "r", "kind": "absence"}]}, "rules[0].absent_for_s: required for an absence rule"),
        ({"rules": [{"name": "r", "kind": "consecutive_failures", "count": 0}]}, "rules[0].count: must be >= 1"),
        ({"receivers": [{"name": "ops", "url": "ftp://x"}]}, "receivers[0].url: must be an http:// or https:// URL"),
        ({"receivers": [{"name": "ops", "url": "http://x", "format": "teams"}]}, "receivers[0].format: must be one"),
        ({"receivers": [{"name": "ops", "url": "http://x", "max_age_s": -1}]}, "receivers[0].max_age_s: must be > 0"),
        ({"maintenance": [{"name": "m", "cron": "0 2 * *", "duration_s": 60}]},
         "maintenance[0].cron: invalid crontab '0 2 * *': Wrong number of fields"),
        ({"maintenance": [{"name": "m", "cron": "0 25 * * *", "duration_s": 60}]}, "maintenance[0].cron: invalid"),
        ({"maintenance": [{"name": "m", "cron": "0 2 * * *"}]}, "maintenance[0].duration_s: required field is missing"),
        ({"maintenance": [{"name": "m", "cron": "0 2 * * *", "duration_s": 60, "timezone": "Mars/Base"}]},
         "maintenance[0].timezone: unknown time zone 'Mars/Base'"),
        ({"maintenance": [{"name": "m", "cron": "0 2 * * *", "duration_s": 60, "scope": {"probe": "x"}}]},
         "maintenance[0].scope.probe: unknown probe 'x'"),
    ],
)  # fmt: skip
def test_config_errors_name_the_yaml_path(sections: dict[str, Any], message: str) -> None:
    assert config_error(**sections).startswith(message)


def test_receiver_secrets_come_from_the_given_environment() -> None:
    s = settings(
        receivers=[{"name": "ops", "url": "http://x", "secret_env": "OPS_SECRET"}, {"name": "b", "url": "http://y"}]
    )
    resolved = resolve_receiver_secrets(s.receivers, {"OPS_SECRET": "s3cret"})
    assert {k: v.get_secret_value() for k, v in resolved.items()} == {"ops": "s3cret"}
    assert "s3cret" not in repr(resolved)
    with pytest.raises(ConfigError, match=r"^receivers\[0\].secret_env: environment variable OPS_SECRET is not set"):
        resolve_receiver_secrets(s.receivers, {})


# --- state machine ---------------------------------------------------------------------------------


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(timing: Timing, steps: list[tuple[float, bool]], *, muted: bool = False) -> list[tuple[str, str | None]]:
    record = AlertRecord("fp", "r", {"alertname": "r"})
    out: list[tuple[str, str | None]] = []
    for t, met in steps:
        step = advance(record, met, now=at(t), timing=timing, muted=muted)
        record = step.record
        out.append((record.state, step.notify))
    return out


def test_pending_then_firing_after_for_then_resolved() -> None:
    assert run(Timing(for_s=60), [(0, True), (30, True), (60, True), (90, True), (120, False), (150, False)]) == [
        ("pending", None), ("pending", None), ("firing", "firing"), ("firing", None), ("resolved", "resolved"),
        ("resolved", None),
    ]  # fmt: skip


def test_pending_that_clears_never_fires_and_zero_for_fires_at_once() -> None:
    assert run(Timing(for_s=60), [(0, True), (30, False), (40, True)]) == [
        ("pending", None), ("inactive", None), ("pending", None),
    ]  # fmt: skip
    assert run(Timing(), [(0, True)]) == [("firing", "firing")]


def test_keep_firing_for_is_hysteresis() -> None:
    timing = Timing(keep_firing_for_s=60)
    assert run(timing, [(0, True), (10, False), (40, True), (50, False), (100, False), (110, False)]) == [
        ("firing", "firing"), ("firing", None), ("firing", None), ("firing", None), ("firing", None),
        ("resolved", "resolved"),
    ]  # fmt: skip


def test_repeat_interval_renotifies_while_firing() -> None:
    timing = Timing(repeat_interval_s=100)
    notes = [n for _, n in run(timing, [(0, True), (50, True), (99, True), (100, True), (150, True), (200, True)])]
    assert notes == ["firing", None, None, "firing", None, "firing"]


def test_muted_alert_is_notified_when_the_mute_ends_and_resolution_is_always_sent() -> None:
    timing = Timing()
    record = AlertRecord("fp", "r", {})
    step = advance(record, True, now=at(0), timing=timing, muted=True)
    assert (step.record.state, step.notify, step.record.notified_status) == ("firing", None, None)
    step = advance(step.record, True, now=at(10), timing=timing, muted=False)
    assert step.notify == "firing"
    step = advance(step.record, False, now=at(20), timing=timing, muted=True)
    assert (step.record.state, step.notify) == ("resolved", "resolved")
    # Fired and resolved entirely while muted: nothing at all.
    assert run(timing, [(0, True), (10, False)], muted=True) == [("firing", None), ("resolved", None)]


def test_retire_resolves_a_notified_firing_alert_and_forgets_the_rest() -> None:
    firing = advance(AlertRecord("fp", "r", {}), True, now=at(0), timing=Timing(), muted=False).record
    step = retire(firing, now=at(5))
    assert step is not None and step.notify == "resolved" and step.record.resolved_at == at(5)
    assert retire(AlertRecord("fp", "r", {}, state="pending"), now=at(5)) is None


# --- conditions ------------------------------------------------------------------------------------


def test_aggregations() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    assert aggregate_values(values, "mean") == 22.0
    assert aggregate_values(values, "p50") == 3.0
    assert aggregate_values(values, "max") == 100.0 and aggregate_values(values, "min") == 1.0
    assert aggregate_values(values, "p95") == pytest.approx(80.8)
    assert aggregate_values([0.0, 1.0, 1.0, 0.0], "rate") == 0.5
    assert aggregate_values([], "p99") is None


def test_threshold_needs_min_samples() -> None:
    r = rule(min_samples=3)
    assert rules.threshold(r, Aggregate(900.0, 2)).met is False
    assert rules.threshold(r, Aggregate(900.0, 3)).met is True
    assert rules.threshold(r, Aggregate(400.0, 3)).met is False
    assert rules.threshold(r, Aggregate(None, 0)).met is False
    assert rules.threshold(rule(op="<=", value=400), Aggregate(400.0, 1)).met is True


def regression_rule(**kw: Any) -> RuleSettings:
    base = {"name": "creep", "kind": "regression", "metric": "ttft_ms", "agg": "p95", "window_s": 3600,
            "baseline_window_s": 86400, "min_samples": 2, "baseline_min_samples": 5}  # fmt: skip
    return settings(rules=[{**base, **kw}]).rules[0]


def test_regression_ratio_delta_and_direction() -> None:
    ratio = regression_rule(ratio=1.5)
    assert rules.regression(ratio, Aggregate(150.0, 2), Aggregate(100.0, 5)).met is True
    assert rules.regression(ratio, Aggregate(149.0, 2), Aggregate(100.0, 5)).met is False
    assert rules.regression(ratio, Aggregate(0.0, 2), Aggregate(0.0, 5)).met is False  # 0 vs 0 is no change
    # Minimum samples on both sides.
    assert rules.regression(ratio, Aggregate(300.0, 1), Aggregate(100.0, 5)).met is False
    assert rules.regression(ratio, Aggregate(300.0, 2), Aggregate(100.0, 4)).met is False
    observed = rules.regression(ratio, Aggregate(300.0, 2), Aggregate(100.0, 5))
    assert (observed.value, observed.threshold, observed.context["change_pct"]) == (300.0, 150.0, "+200.0%")

    delta = regression_rule(delta=50)
    assert rules.regression(delta, Aggregate(150.0, 2), Aggregate(100.0, 5)).met is True
    assert rules.regression(delta, Aggregate(149.0, 2), Aggregate(100.0, 5)).met is False
    both = regression_rule(ratio=1.5, delta=100)
    assert rules.regression(both, Aggregate(160.0, 2), Aggregate(100.0, 5)).met is False  # ratio yes, delta no
    assert rules.regression(both, Aggregate(200.0, 2), Aggregate(100.0, 5)).met is True
    down = regression_rule(metric="completion_tokens", agg="mean", ratio=2, direction="down")
    assert rules.regression(down, Aggregate(50.0, 2), Aggregate(100.0, 5)).met is True
    assert rules.regression(down, Aggregate(51.0, 2), Aggregate(100.0, 5)).met is False


def test_absence_waits_from_the_later_of_last_ok_and_watch_start() -> None:
    r = settings(rules=[{"name": "silent", "kind": "absence", "absent_for_s": 600}]).rules[0]
    assert rules.absence(r, None, at(0), at(599)).met is False
    assert rules.absence(r, None, at(0), at(600)).met is True
    assert rules.absence(r, at(100), at(0), at(650)).met is False
    observed = rules.absence(r, at(100), at(0), at(700))
    assert observed.met is True and observed.value == 600


def recent(ok: bool, error: str | None = None) -> RecentResult:
    return RecentResult(T0, ok, "http_error" if error else None, error, "" if ok or error else "run_on")


def test_consecutive_failures_counts_the_newest_streak() -> None:
    r = settings(rules=[{"name": "failing", "kind": "consecutive_failures", "count": 3}]).rules[0]
    assert rules.consecutive_failures(r, [recent(False, "HTTP 500: boom"), recent(False), recent(False)]).met is True
    observed = rules.consecutive_failures(r, [recent(False, "HTTP 500: boom"), recent(False), recent(True)])
    assert observed.met is False and observed.value == 2 and observed.context["error"] == "http_error: HTTP 500: boom"
    assert rules.consecutive_failures(r, [recent(False), recent(False)]).met is False


def test_annotations_are_templated() -> None:
    r = rule(annotations={"summary": "TTFT p95 {value} ms > {threshold} ms on {probe}@{target} {unknown}",
                          "description": "broken {brace"})  # fmt: skip
    observed = rules.threshold(r, Aggregate(812.345, 10))
    out = rules.render_annotations(r, observed, "chat", "glm4")
    assert out == {"summary": "TTFT p95 812.3 ms > 500 ms on chat@glm4 {unknown}", "description": "broken {brace"}
    default = rules.render_annotations(rule(), observed, "chat", "glm4")["summary"]
    assert default == "high-ttft on chat: p95 ttft_ms = 812.3 > 500 over 300 s"


# --- muting ----------------------------------------------------------------------------------------


def test_maintenance_window_from_cron_and_duration() -> None:
    window = MaintenanceWindow(name="nightly", cron="0 2 * * *", duration_s=1800)
    day = datetime(2026, 11, 25, tzinfo=UTC)
    assert not in_window(window, day + timedelta(hours=1, minutes=59))
    assert in_window(window, day + timedelta(hours=2))
    assert in_window(window, day + timedelta(hours=2, minutes=29, seconds=59))
    assert not in_window(window, day + timedelta(hours=2, minutes=30))
    shanghai = MaintenanceWindow(name="n", cron="0 2 * * *", duration_s=1800, timezone="Asia/Shanghai")
    assert in_window(shanghai, day - timedelta(hours=6) + timedelta(minutes=10))  # 02:10 in Shanghai


def test_silences_and_windows_mute_matching_alerts() -> None:
    labels = {"alertname": "high-ttft", "probe": "chat", "target": "glm4", "severity": "critical"}
    silence = SilenceView(1, {"alertname": "high-ttft", "probe": "chat"}, at(0), at(3600), "upgrade", "me", at(0))
    other = SilenceView(2, {"alertname": "high-ttft", "probe": "qchat"}, at(0), at(3600), "x", "me", at(0))
    assert mute_reason(labels, now=at(10), silences=[other, silence], windows=[]) == "silence 1"
    assert mute_reason(labels, now=at(3600), silences=[silence], windows=[]) is None
    expired = SilenceView(3, {"alertname": "high-ttft"}, at(0), at(3600), "x", "me", at(0), expired_at=at(5))
    assert mute_reason(labels, now=at(10), silences=[expired], windows=[]) is None
    window = MaintenanceWindow(name="w", cron="0 10 * * *", duration_s=600, scope=Scope(target="glm4"))
    assert mute_reason(labels, now=at(10), silences=[], windows=[window]) == "maintenance w"
    assert mute_reason({**labels, "target": "qwen"}, now=at(10), silences=[], windows=[window]) is None
    assert normalize_matchers({"rule": "high-ttft", "probe": "chat"}) == {"alertname": "high-ttft", "probe": "chat"}
    with pytest.raises(ValueError, match="at least one matcher"):
        normalize_matchers({})


def test_fingerprint_is_stable_and_order_independent() -> None:
    a = fingerprint({"alertname": "x", "probe": "p"})
    assert a == fingerprint({"probe": "p", "alertname": "x"}) and len(a) == 16
    assert a != fingerprint({"alertname": "x", "probe": "q"})
