"""`doctor` and `drift` alerts: observations into a real AlertEngine, a real database, a real webhook receiver.

The producers (the scheduled doctor, the fingerprint) are not run here: their observations are
written by hand, as `monitor.deployment.DeploymentObservation` defines them. The clock is moved by
hand; the dispatcher delivers to a `WebhookReceiver` on 127.0.0.1 in every receiver format.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from sqlalchemy.ext.asyncio import async_sessionmaker

from monitor.alerts.deployment import DeploymentSink, diff
from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.engine import AlertEngine
from monitor.alerts.outbox import Outbox
from monitor.alerts.source import RawWindowSource
from monitor.cli import main
from monitor.clock import ManualClock
from monitor.config import Settings, load_settings, parse_settings
from monitor.config.deployment import DOCTOR_CHECK_IDS, FINGERPRINT_COMPONENTS
from monitor.deployment import DeploymentObservation
from monitor.store import create_engine, upgrade
from tests.receivers import ReceivedRequest, WebhookReceiver
from tests.test_bad_input import _assert_one_error, _run_main, _write
from tests.test_cli_alerts import cli

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
FORMATS = ("generic", "alertmanager", "slack", "feishu", "dingtalk", "wecom")
NOW_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}<|assistant|>"
OLD_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}"
ACCEPT = "If the change was intended, accept it: llm-monitor fingerprint accept --target glm4"
FIX = "start vLLM with --generation-config vllm (the model's generation_config.json sets max_tokens)"


def targets(*, qwen_doctor: bool = True, with_qwen: bool = True) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"name": "glm4", "base_url": "http://127.0.0.1:9/v1", "doctor": {"interval_s": 3600}},
        {"name": "plain", "base_url": "http://127.0.0.1:9/v1"},
    ]
    if with_qwen:
        qwen: dict[str, Any] = {"name": "qwen", "base_url": "http://127.0.0.1:9/v1"}
        if qwen_doctor:
            qwen["doctor"] = {"checks": ["reachable", "stop_tokens"], "fingerprint": {"components": ["models"]}}
        out.append(qwen)
    return out


def settings_for(hook: WebhookReceiver, *rules: dict[str, Any], formats: tuple[str, ...] = ("generic",),
                 **kw: Any) -> Settings:  # fmt: skip
    receivers = [{"name": fmt, "url": f"{hook.url}/{fmt}", "format": fmt} for fmt in formats]
    return parse_settings({"targets": targets(**kw), "rules": list(rules), "receivers": receivers})


DOCTOR: dict[str, Any] = {"name": "doctor-regressed", "kind": "doctor", "severity": "critical", "repeat_interval": "1h"}
DRIFT: dict[str, Any] = {"name": "deployment-drift", "kind": "drift"}


class Rig:
    """An engine, an outbox and a dispatcher on one database, with a hand-moved clock."""

    def __init__(self, sessionmaker: async_sessionmaker[Any], http: aiohttp.ClientSession, hook: WebhookReceiver):
        self.sessionmaker = sessionmaker
        self.http = http
        self.hook = hook
        self.clock = ManualClock(T0)
        self.outbox = Outbox(sessionmaker)
        self._engine: AlertEngine | None = None
        self._dispatcher: Dispatcher | None = None

    @property
    def engine(self) -> AlertEngine:
        assert self._engine is not None, "call use() first"
        return self._engine

    def use(self, settings: Settings) -> AlertEngine:
        """A new engine (a daemon start or restart) and dispatcher on the same database."""
        self._engine = AlertEngine(
            settings, self.sessionmaker, source=RawWindowSource(self.sessionmaker), clock=self.clock,
            outbox=self.outbox,
        )  # fmt: skip
        self._dispatcher = Dispatcher(
            settings, self.sessionmaker, self.http, clock=self.clock, secrets={}, rng=random.Random(3)
        )
        return self._engine

    async def feed(self, *observations: DeploymentObservation) -> None:
        sink: DeploymentSink = self.engine  # what the producers are handed
        await sink.on_deployment(observations)

    async def deliver(self) -> list[ReceivedRequest]:
        """Send what is due; the requests that arrived in this round."""
        assert self._dispatcher is not None
        before = len(self.hook.received)
        await self._dispatcher.dispatch_due()
        return self.hook.received[before:]

    async def states(self) -> dict[tuple[str, str | None, str | None], str]:
        """(rule, target, check or component) -> state of every known alert."""
        views = await self.engine.alerts(include_inactive=True)
        return {
            (v.rule, v.labels.get("target"), v.labels.get("check") or v.labels.get("component")): v.state for v in views
        }


@pytest.fixture(name="rig")
async def fix_rig(db_url: str) -> AsyncIterator[Rig]:
    engine = create_engine(db_url)
    try:
        await upgrade(engine)
        async with aiohttp.ClientSession() as http, WebhookReceiver() as hook:
            yield Rig(async_sessionmaker(engine, expire_on_commit=False), http, hook)
    finally:
        await engine.dispose()


def doctor_run(rig: Rig, target: str = "glm4", failing: dict[str, str] | None = None) -> list[DeploymentObservation]:
    """One scheduled doctor run: every check, those in `failing` worse than their reference (check -> verdict)."""
    failing = failing or {}
    checks = DOCTOR_CHECK_IDS if target == "glm4" else ("reachable", "stop_tokens")
    return [
        DeploymentObservation(
            kind="doctor",
            target=target,
            key=check,
            active=check in failing,
            at=rig.clock.now(),
            summary=f"{check}: {failing[check]} (was pass)" if check in failing else f"{check}: pass",
            before="pass",
            after=failing.get(check, "pass"),
            fix=FIX if check in failing else None,
        )  # fmt: skip
        for check in checks
    ]


def drift_run(rig: Rig, target: str = "glm4", changed: dict[str, tuple[str, str]] | None = None) -> list[
    DeploymentObservation
]:  # fmt: skip
    """One fingerprint run: every component, those in `changed` (component -> (before, after)) differing."""
    changed = changed or {}
    components = FINGERPRINT_COMPONENTS if target == "glm4" else ("models",)
    out = []
    for component in components:
        before, after = changed.get(component, ("same", "same"))
        out.append(
            DeploymentObservation(
                kind="drift",
                target=target,
                key=component,
                active=component in changed,
                at=rig.clock.now(),
                summary=f"{component} differs from the accepted baseline" if component in changed else "unchanged",
                before=before,
                after=after,
                fix=ACCEPT if component in changed else None,
            )
        )
    return out


async def test_doctor_check_fires_once_repeats_on_interval_and_resolves(rig: Rig) -> None:
    rig.use(settings_for(rig.hook, DOCTOR))
    await rig.feed(*doctor_run(rig))
    assert await rig.states() == {} and await rig.deliver() == []  # all pass: nothing stored, nothing sent

    await rig.feed(*doctor_run(rig, failing={"stop_tokens": "fail"}))
    assert await rig.states() == {("doctor-regressed", "glm4", "stop_tokens"): "firing"}
    (request,) = await rig.deliver()
    alert = request.json["alert"]
    assert request.json["status"] == "firing"
    assert alert["labels"] == {
        "alertname": "doctor-regressed", "target": "glm4", "severity": "critical", "check": "stop_tokens",
    }  # fmt: skip
    assert alert["probe"] is None and alert["target"] == "glm4"
    assert alert["annotations"] == {
        "summary": "doctor-regressed on glm4: doctor check stop_tokens: stop_tokens: fail (was pass)", "fix": FIX,
    }  # fmt: skip

    # Still failing on the next runs and between them: no new message until repeat_interval (1 h).
    for _ in range(5):
        rig.clock.advance(600)
        await rig.engine.evaluate_all()
        await rig.feed(*doctor_run(rig, failing={"stop_tokens": "fail"}))
        assert await rig.deliver() == []
    rig.clock.advance(600)
    await rig.feed(*doctor_run(rig, failing={"stop_tokens": "fail"}))
    (repeat,) = await rig.deliver()
    assert repeat.json["status"] == "firing" and repeat.json["alert"]["fingerprint"] == alert["fingerprint"]

    rig.clock.advance(600)
    await rig.feed(*doctor_run(rig))
    (resolved,) = await rig.deliver()
    assert resolved.json["status"] == "resolved" and resolved.json["alert"]["ended_at"] is not None
    assert resolved.json["alert"]["annotations"]["summary"].endswith("stop_tokens: pass")
    assert await rig.states() == {("doctor-regressed", "glm4", "stop_tokens"): "resolved"}
    await rig.feed(*doctor_run(rig))
    assert await rig.deliver() == []


async def test_for_s_holds_and_keep_firing_for_s_counts_between_runs(rig: Rig) -> None:
    rig.use(settings_for(rig.hook, {**DOCTOR, "for": "10m", "keep_firing_for": "5m"}))
    key = ("doctor-regressed", "glm4", "truncation")
    await rig.feed(*doctor_run(rig, failing={"truncation": "warn"}))
    assert await rig.states() == {key: "pending"}
    rig.clock.advance(300)
    await rig.feed(*doctor_run(rig))  # passes again before for_s: back to inactive, nothing sent
    assert await rig.states() == {key: "inactive"} and await rig.deliver() == []

    await rig.feed(*doctor_run(rig, failing={"truncation": "warn"}))
    rig.clock.advance(599)
    await rig.engine.evaluate_all()
    assert await rig.states() == {key: "pending"}
    rig.clock.advance(1)
    await rig.engine.evaluate_all()  # the timer fires it: no new run needed
    assert await rig.states() == {key: "firing"}
    (firing,) = await rig.deliver()
    assert firing.json["alert"]["annotations"]["fix"] == FIX

    await rig.feed(*doctor_run(rig))
    assert await rig.states() == {key: "firing"}  # keep_firing_for_s: still firing
    rig.clock.advance(300)
    await rig.engine.evaluate_all()
    assert await rig.states() == {key: "resolved"}
    (resolved,) = await rig.deliver()
    assert resolved.json["status"] == "resolved"


async def test_drift_diff_reaches_every_receiver_format(rig: Rig) -> None:
    rig.use(settings_for(rig.hook, DRIFT, formats=FORMATS))
    await rig.feed(*drift_run(rig))
    assert await rig.deliver() == []

    await rig.feed(*drift_run(rig, changed={"chat_template": (OLD_TEMPLATE, NOW_TEMPLATE)}))
    assert await rig.states() == {("deployment-drift", "glm4", "chat_template"): "firing"}
    requests = {r.path.rsplit("/", 1)[-1]: r.json for r in await rig.deliver()}
    assert sorted(requests) == sorted(FORMATS)
    expected_diff = diff(OLD_TEMPLATE, NOW_TEMPLATE)
    assert "-{% endfor %}" in expected_diff and "+{% endfor %}<|assistant|>" in expected_diff

    generic = requests["generic"]["alert"]
    assert generic["labels"]["component"] == "chat_template" and "check" not in generic["labels"]
    assert generic["annotations"]["diff"] == expected_diff and generic["annotations"]["fix"] == ACCEPT
    am = requests["alertmanager"]
    assert am["alerts"][0]["annotations"]["diff"] == expected_diff
    assert am["groupLabels"] == {"alertname": "deployment-drift", "target": "glm4", "component": "chat_template"}
    slack = requests["slack"]
    assert "on glm4 (chat_template)" in slack["text"]
    assert "-{% endfor %}" in slack["blocks"][1]["text"]["text"]
    assert {"type": "mrkdwn", "text": "*Component:*\nchat_template"} in slack["blocks"][2]["fields"]
    feishu = str(requests["feishu"]["card"])
    assert "+{% endfor %}<|assistant|>" in feishu and "Component: chat_template" in feishu
    # Markdown robots: one line per diff line, each escaped (braces, pipes and percent signs inert).
    dingtalk = requests["dingtalk"]["markdown"]["text"]
    assert "\n\n-\\{% endfor %\\}\n\n\\+\\{% endfor %\\}&lt;\\|assistant\\|&gt;\n\n" in dingtalk
    wecom = requests["wecom"]["markdown"]["content"]
    assert "> -\\{% endfor %\\}" in wecom


async def test_a_huge_diff_is_capped_in_every_format(rig: Rig) -> None:
    rig.use(settings_for(rig.hook, DRIFT, formats=FORMATS))
    before = "\n".join(f"token {i}: 你好" for i in range(3000))
    after = "\n".join(f"token {i}: 再见" for i in range(3000))
    await rig.feed(*drift_run(rig, changed={"tokenizer": (before, after)}))
    requests = {r.path.rsplit("/", 1)[-1]: r for r in await rig.deliver()}
    assert sorted(requests) == sorted(FORMATS)
    assert len(requests["generic"].json["alert"]["annotations"]["diff"]) == 1000
    assert len(requests["wecom"].json["markdown"]["content"].encode()) <= 4096
    for request in requests.values():
        assert len(request.body) < 20_000, request.path


async def test_an_unchanged_deployment_never_alerts(rig: Rig) -> None:
    rig.use(settings_for(rig.hook, DOCTOR, DRIFT))
    for _ in range(24):
        await rig.feed(*doctor_run(rig), *drift_run(rig), *doctor_run(rig, "qwen"), *drift_run(rig, "qwen"))
        rig.clock.advance(3600)
        await rig.engine.evaluate_all()
    assert await rig.states() == {} and await rig.deliver() == [] and await rig.outbox.messages() == []


async def test_each_flipped_component_or_check_fires_exactly_its_alert(rig: Rig) -> None:
    rig.use(settings_for(rig.hook, DOCTOR, DRIFT))
    for component in FINGERPRINT_COMPONENTS:
        await rig.feed(*drift_run(rig, changed={component: ("a", "b")}), *doctor_run(rig))
        (request,) = await rig.deliver()
        assert request.json["alert"]["labels"]["component"] == component
        assert request.json["alert"]["annotations"]["diff"] == "-a\n+b"
        await rig.feed(*drift_run(rig))
        (resolved,) = await rig.deliver()
        assert resolved.json["status"] == "resolved"
    for check in DOCTOR_CHECK_IDS:
        await rig.feed(*doctor_run(rig, failing={check: "fail"}), *drift_run(rig))
        (request,) = await rig.deliver()
        assert request.json["alert"]["labels"]["check"] == check
        await rig.feed(*doctor_run(rig))
        assert [r.json["status"] for r in await rig.deliver()] == ["resolved"]


async def test_silences_match_check_and_component_labels(rig: Rig) -> None:
    engine = rig.use(settings_for(rig.hook, DOCTOR, DRIFT))
    await engine.add_silence(matchers={"check": "stop_tokens"}, duration_s=3600, comment="known", created_by="t")
    await engine.add_silence(matchers={"component": "version"}, duration_s=3600, comment="upgrade", created_by="t")
    await rig.feed(
        *doctor_run(rig, failing={"stop_tokens": "fail", "truncation": "fail"}),
        *drift_run(rig, changed={"version": ("0.10.1", "0.11.0"), "models": ("a", "b")}),
    )
    sent = {
        r.json["alert"]["labels"].get("check") or r.json["alert"]["labels"]["component"] for r in await rig.deliver()
    }
    assert sent == {"truncation", "models"}
    views = {v.labels.get("check") or v.labels.get("component"): v for v in await engine.alerts()}
    assert views["stop_tokens"].muted_by is not None and views["version"].muted_by is not None
    assert views["truncation"].muted_by is None
    assert views["stop_tokens"].to_json()["probe"] is None and views["stop_tokens"].to_json()["target"] == "glm4"


async def test_checks_components_and_target_scope_filter(rig: Rig) -> None:
    rules: list[dict[str, Any]] = [
        {**DOCTOR, "checks": ["stop_tokens"], "scope": {"target": "qwen"}},
        {**DRIFT, "components": ["models", "chat_template"]},
    ]
    rig.use(settings_for(rig.hook, *rules))
    await rig.feed(
        *doctor_run(rig, failing={"stop_tokens": "fail", "truncation": "fail"}),  # glm4: out of scope
        *doctor_run(rig, "qwen", failing={"reachable": "fail", "stop_tokens": "warn"}),
        *drift_run(rig, changed={"version": ("1", "2"), "chat_template": ("x", "y")}),
        *drift_run(rig, "qwen", changed={"models": ("m", "n")}),
        # qwen's doctor records only reachable and stop_tokens, and the models component: these are unknown keys.
        DeploymentObservation("doctor", "qwen", "truncation", True, rig.clock.now(), "x"),
        DeploymentObservation("drift", "qwen", "chat_template", True, rig.clock.now(), "x"),
        DeploymentObservation("drift", "plain", "models", True, rig.clock.now(), "x"),
    )
    assert await rig.states() == {
        ("doctor-regressed", "qwen", "stop_tokens"): "firing",
        ("deployment-drift", "glm4", "chat_template"): "firing",
        ("deployment-drift", "qwen", "models"): "firing",
    }
    assert len(await rig.deliver()) == 3


async def test_restart_keeps_firing_state_without_renotifying(rig: Rig) -> None:
    settings = settings_for(rig.hook, {**DOCTOR, "keep_firing_for": "5m"}, DRIFT)
    rig.use(settings)
    await rig.feed(*doctor_run(rig, failing={"limits": "fail"}), *drift_run(rig, changed={"reply": ("hi", "hello")}))
    assert len(await rig.deliver()) == 2
    await rig.feed(*doctor_run(rig))  # limits clears: keep_firing_for_s is counting

    engine = rig.use(settings)  # the daemon restarts
    await engine.start()
    assert await rig.states() == {
        ("doctor-regressed", "glm4", "limits"): "firing", ("deployment-drift", "glm4", "reply"): "firing",
    }  # fmt: skip
    await rig.feed(*drift_run(rig, changed={"reply": ("hi", "hello")}))
    assert await rig.deliver() == []  # its firing was notified before the restart
    rig.clock.advance(300)
    await engine.evaluate_all()  # the stored clear_since survived: limits resolves on time
    (resolved,) = await rig.deliver()
    assert (resolved.json["status"], resolved.json["alert"]["labels"]["check"]) == ("resolved", "limits")


@pytest.mark.parametrize("change", ["no-doctor", "no-target", "no-rule"])
async def test_reload_retires_alerts_of_targets_no_longer_doctored(rig: Rig, change: str) -> None:
    rig.use(settings_for(rig.hook, DOCTOR))
    await rig.feed(*doctor_run(rig, "qwen", failing={"stop_tokens": "fail"}))
    assert len(await rig.deliver()) == 1
    if change == "no-rule":
        reloaded = settings_for(rig.hook, DRIFT)
    else:
        reloaded = settings_for(rig.hook, DOCTOR, qwen_doctor=False, with_qwen=change == "no-doctor")
    rig.engine.reload(reloaded)
    await rig.engine.evaluate_all()
    (resolved,) = await rig.deliver()
    assert resolved.json["status"] == "resolved" and resolved.json["alert"]["labels"]["target"] == "qwen"
    assert await rig.states() == {("doctor-regressed", "qwen", "stop_tokens"): "resolved"}
    await rig.feed(*doctor_run(rig, "qwen", failing={"stop_tokens": "fail"}))  # a late run: nothing watches it
    assert await rig.deliver() == []


async def test_annotation_templates_see_check_before_after_fix(rig: Rig) -> None:
    rule = {
        **DOCTOR,
        "annotations": {"summary": "{target}: {check} went {before} -> {after}", "runbook": "do this: {fix}"},
    }
    rig.use(settings_for(rig.hook, rule, {**DRIFT, "annotations": {"summary": "{component}: {before} => {after}"}}))
    await rig.feed(
        *doctor_run(rig, failing={"streaming": "warn"}), *drift_run(rig, changed={"version": ("0.10", "0.11")})
    )
    got = {r.json["alert"]["name"]: r.json["alert"]["annotations"] for r in await rig.deliver()}
    assert got == {
        "doctor-regressed": {"summary": "glm4: streaming went pass -> warn", "runbook": f"do this: {FIX}", "fix": FIX},
        "deployment-drift": {"summary": "version: 0.10 => 0.11", "diff": "-0.10\n+0.11", "fix": ACCEPT},
    }


DOCTORED = (
    "targets: [{name: m, base_url: 'http://127.0.0.1:9/v1', doctor: {checks: [reachable, stop_tokens]}}, "
    "{name: n, base_url: 'http://127.0.0.1:9/v1'}]\nprobes: [{name: p, target: m, prompt: hi, endpoint: completion}]\n"
)
BAD_RULES = {
    "probe-scope": (
        "{name: r, kind: doctor, scope: {probe: p}}",
        "rules[0].scope.probe: a doctor rule watches targets",
    ),
    "unknown-check": ("{name: r, kind: doctor, checks: [stop_token]}", "rules[0].checks[0]: unknown doctor check"),
    "unknown-component": (
        "{name: r, kind: drift, components: [template]}",
        "rules[0].components[0]: unknown fingerprint component",
    ),
    "window-field": ("{name: r, kind: drift, window: 5m}", "rules[0].window_s: not used by a drift rule"),
    "metric-field": ("{name: r, kind: doctor, metric: ttft_ms}", "rules[0].metric: not used by a doctor rule"),
    "checks-on-threshold": (
        "{name: r, kind: absence, absent_for: 5m, checks: [reachable]}",
        "rules[0].checks: not used by an absence rule",
    ),
    "components-on-doctor": ("{name: r, kind: doctor, components: [models]}", "rules[0].components: not used by a"),
    "undoctored-target": (
        "{name: r, kind: doctor, scope: {target: n}}",
        "rules[0].scope: target 'n' has a doctor: schedule, so",
    ),
    "check-not-run": (
        "{name: r, kind: doctor, checks: [stop_tokens, truncation]}",
        "rules[0].checks[1]: no target in scope records 'truncation'",
    ),
    "reserved-label": ("{name: r, kind: drift, labels: {component: x}}", "rules[0].labels: label 'component' is set"),
}


@pytest.mark.parametrize("case", list(BAD_RULES))
def test_bad_doctor_and_drift_rules_are_one_line_through_check_config(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rule, expected = BAD_RULES[case]
    code, lines = _run_main(["check-config", "-c", str(_write(tmp_path, f"{DOCTORED}rules: [{rule}]"))], capsys)
    _assert_one_error(code, lines, expected)


def test_doctor_rules_without_any_doctored_target_can_never_fire(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = "targets: [{name: n, base_url: 'http://127.0.0.1:9/v1'}]\nrules: [{name: r, kind: drift}]"
    code, lines = _run_main(["check-config", "-c", str(_write(tmp_path, config))], capsys)
    _assert_one_error(code, lines, "rules[0].scope: no target has a doctor: schedule with the fingerprint enabled")
    good = f"{DOCTORED}rules: [{{name: r, kind: doctor, checks: [stop_tokens]}}, {{name: d, kind: drift}}]"
    with pytest.raises(SystemExit) as exc:
        main(["check-config", "-c", str(_write(tmp_path, good))])
    assert exc.value.code == 0 and "ok (2 targets, 1 probes, 2 rules" in capsys.readouterr().out


async def test_cli_lists_and_silences_a_doctor_alert_by_its_check(tmp_path: Path) -> None:
    config = tmp_path / "monitor.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"url": f"sqlite:///{tmp_path / 'm.db'}"},
                "targets": [{"name": "glm4", "base_url": "http://127.0.0.1:9/v1", "doctor": {"interval_s": 3600}}],
                "rules": [DOCTOR],
            }
        )
    )
    settings = load_settings(config)
    db = create_engine(settings.storage.url)
    try:
        await upgrade(db)
        sessionmaker = async_sessionmaker(db, expire_on_commit=False)
        engine = AlertEngine(
            settings, sessionmaker, source=RawWindowSource(sessionmaker), clock=ManualClock(datetime.now(UTC)),
            outbox=Outbox(sessionmaker),
        )  # fmt: skip
        await engine.on_deployment(
            [DeploymentObservation("doctor", "glm4", "stop_tokens", True, datetime.now(UTC), "stop_tokens: fail")]
        )
    finally:
        await db.dispose()

    table = await cli("alerts", "-c", str(config), cwd=tmp_path)
    row = next(line for line in table.stdout.splitlines() if "doctor-regressed" in line)
    assert row.replace("│", " ").split()[:6] == [
        "firing",
        "doctor-regressed",
        "check",
        "stop_tokens",
        "glm4",
        "critical",
    ]
    added = await cli(
        "silence", "add", "--rule", "doctor-regressed", "--label", "check=stop_tokens", "--for", "1d", "--comment",
        "known", "-c", str(config), cwd=tmp_path,
    )  # fmt: skip
    assert added.code == 0, added.stderr
    (alert,) = json.loads((await cli("alerts", "--json", "-c", str(config), cwd=tmp_path)).stdout)
    assert (alert["probe"], alert["target"], alert["labels"]["check"], alert["muted_by"]) == (
        None, "glm4", "stop_tokens", "silence 1",
    )  # fmt: skip
