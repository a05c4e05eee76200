"""The `rules:`, `receivers:` and `maintenance:` sections: alert rules, webhook receivers, quiet hours.

Field-level problems are reported by pydantic (the loader turns them into
`rules[0].window_s: must be > 0`); what needs the whole config (names that refer to probes,
targets or receivers, and the fields each rule kind requires) is checked by `check_references`,
which raises `ConfigError` naming the YAML path itself.

Durations accept seconds or `30s`/`5m`/`2h`/`7d` strings (finite, at most `MAX_DURATION_S`), and
the Prometheus spellings `for`, `keep_firing_for`, `repeat_interval`, `window`, `baseline_window`
and `absent_for` are accepted as aliases of the `_s` fields (`minutes` too, for absence rules).

`doctor` and `drift` rules watch the scheduled doctor and fingerprint (`targets[].doctor`), not
probes: they scope by target only, and `check_references` refuses one whose targets are never
doctored (it could never fire).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from monitor.config.base import (
    Bool,
    Crontab,
    Int,
    Model,
    Name,
    Number,
    Seconds,
    check_headers,
    choices,
    read_secret,
    unique,
)
from monitor.config.deployment import DoctorCheckId, DoctorSchedule, FingerprintComponent
from monitor.errors import ConfigError
from monitor.metric_catalog import METRIC_NAMES, RATES, metric

__all__ = [
    "DEPLOYMENT_KEY_LABELS",
    "DEPLOYMENT_KINDS",
    "RATE_METRICS",
    "RESERVED_LABELS",
    "MaintenanceWindow",
    "ReceiverSettings",
    "RuleSettings",
    "Scope",
    "check_references",
    "deployment_keys",
    "resolve_receiver_secrets",
]


def _known_metric(value: Any) -> Any:
    # The catalogue, not a Literal, lists the metrics: one row there adds one here.
    if value not in METRIC_NAMES:
        *first, last = (repr(name) for name in METRIC_NAMES)
        raise ValueError(f"must be one of {', '.join(first)} or {last}")
    return value


RuleKind = Literal["threshold", "regression", "absence", "consecutive_failures", "doctor", "drift"]
# Kinds fed by DeploymentObservation (one alert per target and check or component), not by probe results.
DEPLOYMENT_KINDS = frozenset({"doctor", "drift"})
# The label naming what a deployment alert is about, per kind; a rule's `labels:` may not set it either.
DEPLOYMENT_KEY_LABELS = {"doctor": "check", "drift": "component"}
Metric = Annotated[str, BeforeValidator(_known_metric)]
Agg = Literal["mean", "p50", "p95", "p99", "max", "min", "rate"]
Op = Literal[">", ">=", "<", "<="]
Severity = Literal["info", "warning", "critical"]
ReceiverFormat = Literal["generic", "alertmanager", "slack", "feishu", "dingtalk", "wecom"]

RATE_METRICS = RATES
# Labels every alert carries; a rule's own `labels:` may not redefine them.
RESERVED_LABELS = frozenset({"alertname", "probe", "target", "severity"})
DEFAULT_REPEAT_INTERVAL_S = 4 * 3600.0
DEFAULT_MAX_AGE_S = 24 * 3600.0
_LABEL_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _rename(data: Any, aliases: Mapping[str, str]) -> Any:
    """Accept Prometheus-style keys (`for: 2m`) for the `_s` fields; both spellings at once is an error."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for alias, field in aliases.items():
        if alias in out:
            if field in out:
                raise ValueError(f"give {field} or {alias}, not both")
            out[field] = out.pop(alias)
    return out


class Scope(Model):
    """Which probes a rule or window covers: one probe, every probe of one target, or all (both None)."""

    probe: str | None = None
    target: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Scope:
        if self.probe is not None and self.target is not None:
            raise ValueError("give probe or target, not both")
        return self

    def covers(self, probe: str, target: str) -> bool:
        if self.probe is not None:
            return probe == self.probe
        if self.target is not None:
            return target == self.target
        return True


def _scope_before(value: object) -> object:
    if value is None or value == "all":
        return {}
    if isinstance(value, str):
        raise ValueError("must be all, {probe: NAME} or {target: NAME}")
    return value


ScopeField = Annotated[Scope, BeforeValidator(_scope_before)]


class RuleSettings(Model):
    """One alert rule. Which fields apply depends on `kind` (checked by `check_references`)."""

    name: Name
    kind: RuleKind
    scope: ScopeField = Field(default_factory=Scope)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict, description="summary, description, ...; templated")
    severity: Severity = "warning"
    for_s: Seconds = Field(0.0, ge=0, description="how long the condition must hold before firing")
    keep_firing_for_s: Seconds = Field(0.0, ge=0, description="keep firing this long after the condition clears")
    repeat_interval_s: Seconds = Field(DEFAULT_REPEAT_INTERVAL_S, gt=0)
    receivers: list[str] | None = Field(None, description="receiver names; default: every receiver")
    # threshold and regression
    metric: Metric | None = None
    check: str | None = Field(None, description="the check whose failure rate check_failure_rate measures")
    agg: Agg | None = None
    window_s: Seconds | None = Field(None, gt=0)
    min_samples: Int = Field(1, ge=1, le=1_000_000)
    # threshold
    op: Op | None = None
    value: Number | None = None
    # regression
    baseline_window_s: Seconds | None = Field(None, gt=0)
    baseline_min_samples: Int | None = Field(None, ge=1, le=1_000_000)
    ratio: Number | None = Field(None, gt=0)
    delta: Number | None = Field(None, gt=0)
    direction: Literal["up", "down"] = "up"
    # absence
    absent_for_s: Seconds | None = Field(None, gt=0)
    # consecutive_failures
    count: Int | None = Field(None, ge=1, le=1_000_000)
    # doctor and drift
    checks: list[DoctorCheckId] | None = Field(None, description="doctor checks watched; default: every check")
    components: list[FingerprintComponent] | None = Field(
        None, description="fingerprint components watched; default: every component"
    )

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        data = _rename(
            data,
            {"for": "for_s", "keep_firing_for": "keep_firing_for_s", "repeat_interval": "repeat_interval_s",
             "window": "window_s", "baseline_window": "baseline_window_s", "absent_for": "absent_for_s"},
        )  # fmt: skip
        if isinstance(data, dict) and "minutes" in data:
            minutes = data.pop("minutes")
            if "absent_for_s" in data:
                raise ValueError("give absent_for_s or minutes, not both")
            if not isinstance(minutes, int | float) or isinstance(minutes, bool) or minutes <= 0:
                raise ValueError("minutes: must be a number > 0")
            data["absent_for_s"] = float(minutes) * 60.0
        return data

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _LABEL_KEY.match(key):
                raise ValueError(f"label name {key!r} must match [a-zA-Z_][a-zA-Z0-9_]*")
            if key in RESERVED_LABELS:
                raise ValueError(
                    f"label {key!r} is set by llm-monitor (reserved: {', '.join(sorted(RESERVED_LABELS))})"
                )
        return value

    def watches(self, key: str) -> bool:
        """A doctor rule's check or a drift rule's component is one it watches (no list: all of them)."""
        keys = self.checks if self.kind == "doctor" else self.components
        return keys is None or key in keys

    @property
    def effective_agg(self) -> str:
        """`agg`, defaulting to `rate` for rate metrics and `mean` otherwise."""
        if self.agg is not None:
            return self.agg
        return "rate" if self.metric in RATE_METRICS else "mean"

    @property
    def effective_baseline_min_samples(self) -> int:
        return self.baseline_min_samples if self.baseline_min_samples is not None else self.min_samples


class ReceiverSettings(Model):
    """One notification receiver (a webhook)."""

    name: Name
    format: ReceiverFormat = "generic"
    url: str
    secret_env: str | None = Field(None, description="environment variable holding the signing secret")
    send_resolved: Bool = True
    timeout_s: Seconds = Field(10.0, gt=0, le=300)
    max_age_s: Seconds = Field(DEFAULT_MAX_AGE_S, gt=0, description="retry a message until it is this old")
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+\S*$", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        check_headers(value)
        return value


class MaintenanceWindow(Model):
    """A recurring window (cron start + duration) during which notifications are held."""

    name: Name
    timezone: str = "UTC"
    cron: Crontab = Field(description="5-field crontab: minute hour day month weekday")
    duration_s: Seconds = Field(gt=0)
    scope: ScopeField = Field(default_factory=Scope)

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        return _rename(data, {"duration": "duration_s"})

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as UTC or Asia/Shanghai)") from None
        return value

    def trigger(self) -> Any:
        """The APScheduler CronTrigger of this window's start times (imported here: config stays light)."""
        from apscheduler.triggers.cron import CronTrigger

        return CronTrigger.from_crontab(self.cron, timezone=ZoneInfo(self.timezone))


# Which optional fields each kind needs (the rest must be left out, so a typo in `kind` is not silent).
_REQUIRED: dict[str, tuple[str, ...]] = {
    "threshold": ("metric", "window_s", "op", "value"),
    "regression": ("metric", "window_s", "baseline_window_s"),
    "absence": ("absent_for_s",),
    "consecutive_failures": ("count",),
    "doctor": (),
    "drift": (),
}
_ALLOWED: dict[str, frozenset[str]] = {
    "threshold": frozenset({"metric", "check", "agg", "window_s", "min_samples", "op", "value"}),
    "regression": frozenset(
        {
            "metric",
            "check",
            "agg",
            "window_s",
            "min_samples",
            "baseline_window_s",
            "baseline_min_samples",
            "ratio",
            "delta",
            "direction",
        }
    ),  # fmt: skip
    "absence": frozenset({"absent_for_s"}),
    "consecutive_failures": frozenset({"count"}),
    "doctor": frozenset({"checks"}),
    "drift": frozenset({"components"}),
}
_KIND_FIELDS = frozenset().union(*_ALLOWED.values())


def check_references(
    rules: Sequence[RuleSettings],
    receivers: Sequence[ReceiverSettings],
    maintenance: Sequence[MaintenanceWindow],
    *,
    probes: set[str],
    targets: set[str],
    doctored: Mapping[str, DoctorSchedule] | None = None,
) -> None:
    """Cross-field checks (rule kinds, scopes, receiver names); raise ConfigError naming the YAML path.

    `doctored` maps each target with a `doctor:` schedule to it (doctor and drift rules need one).
    """
    unique("rules", [r.name for r in rules])
    unique("receivers", [r.name for r in receivers])
    unique("maintenance", [m.name for m in maintenance])
    receiver_names = {r.name for r in receivers}
    for i, rule in enumerate(rules):
        _check_rule(f"rules[{i}]", rule)
        _check_scope(f"rules[{i}].scope", rule.scope, probes, targets)
        if rule.kind in DEPLOYMENT_KINDS:
            _check_deployment_rule(f"rules[{i}]", rule, doctored or {})
        for j, name in enumerate(rule.receivers or ()):
            if name not in receiver_names:
                raise ConfigError(f"rules[{i}].receivers[{j}]: unknown receiver {name!r} ({choices(receiver_names)})")
    for i, window in enumerate(maintenance):
        _check_scope(f"maintenance[{i}].scope", window.scope, probes, targets)


def _check_rule(path: str, rule: RuleSettings) -> None:
    given = {f for f in _KIND_FIELDS if f in rule.model_fields_set}
    for field in _REQUIRED[rule.kind]:
        if getattr(rule, field) is None:
            raise ConfigError(f"{path}.{field}: required for {_a(rule.kind)} rule")
    extra = sorted(given - _ALLOWED[rule.kind])
    if extra:
        raise ConfigError(f"{path}.{extra[0]}: not used by {_a(rule.kind)} rule")
    if rule.metric is not None:
        per_check = metric(rule.metric).per_check
        if per_check and not rule.check:
            raise ConfigError(f"{path}.check: required for metric {rule.metric} (the check's name)")
        if not per_check and rule.check is not None:
            raise ConfigError(f"{path}.check: only used with metric check_failure_rate")
        is_rate = rule.metric in RATE_METRICS
        if rule.agg is not None and (rule.agg == "rate") != is_rate:
            hint = "rate metrics use agg: rate" if is_rate else "agg: rate is only for error_rate, truncation_rate, ..."
            raise ConfigError(f"{path}.agg: {rule.agg} does not apply to {rule.metric} ({hint})")
    if rule.kind == "regression" and rule.ratio is None and rule.delta is None:
        raise ConfigError(f"{path}: a regression rule needs ratio or delta (or both)")
    if rule.kind == "regression" and rule.ratio is not None and rule.ratio <= 1:
        raise ConfigError(f"{path}.ratio: must be > 1 (for decreases use direction: down)")


def _check_deployment_rule(path: str, rule: RuleSettings, doctored: Mapping[str, DoctorSchedule]) -> None:
    """A doctor or drift rule: scoped by target, over targets that run the doctor (and what it watches)."""
    if rule.scope.probe is not None:
        raise ConfigError(f"{path}.scope.probe: {_a(rule.kind)} rule watches targets; give scope.target (or all)")
    key_label = DEPLOYMENT_KEY_LABELS[rule.kind]
    if key_label in rule.labels:
        raise ConfigError(f"{path}.labels: label {key_label!r} is set by llm-monitor on {_a(rule.kind)} rule")
    in_scope = {t: s for t, s in doctored.items() if rule.scope.target in (None, t)}
    if rule.kind == "drift":
        in_scope = {t: s for t, s in in_scope.items() if s.fingerprint.enabled}
    if not in_scope:
        where = f"target {rule.scope.target!r} has" if rule.scope.target is not None else "no target has"
        need = "a doctor: schedule" if rule.kind == "doctor" else "a doctor: schedule with the fingerprint enabled"
        raise ConfigError(f"{path}.scope: {where} {need}, so this rule can never fire (add targets[].doctor)")
    field, keys = ("checks", rule.checks) if rule.kind == "doctor" else ("components", rule.components)
    for j, key in enumerate(keys or ()):
        if not any(key in deployment_keys(rule.kind, s) for s in in_scope.values()):
            raise ConfigError(f"{path}.{field}[{j}]: no target in scope records {key!r} (see targets[].doctor)")


def deployment_keys(kind: str, schedule: DoctorSchedule) -> tuple[str, ...]:
    """What a target's doctor schedule reports for `kind`: its checks (doctor) or components (drift)."""
    if kind == "doctor":
        return schedule.effective_checks
    return schedule.fingerprint.effective_components if schedule.fingerprint.enabled else ()


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _check_scope(path: str, scope: Scope, probes: set[str], targets: set[str]) -> None:
    if scope.probe is not None and scope.probe not in probes:
        raise ConfigError(f"{path}.probe: unknown probe {scope.probe!r} ({choices(probes)})")
    if scope.target is not None and scope.target not in targets:
        raise ConfigError(f"{path}.target: unknown target {scope.target!r} ({choices(targets)})")


def resolve_receiver_secrets(receivers: Sequence[ReceiverSettings], environ: Mapping[str, str]) -> dict[str, SecretStr]:
    """Read each receiver's `secret_env` from `environ`; a missing variable is a ConfigError with its path."""
    secrets: dict[str, SecretStr] = {}
    for i, receiver in enumerate(receivers):
        secret = read_secret(environ, f"receivers[{i}].secret_env", receiver.secret_env)
        if secret is not None:
            secrets[receiver.name] = secret
    return secrets
