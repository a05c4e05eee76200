"""Pure rule evaluation: inputs (aggregates, recent results) -> does the condition hold, with what value.

No I/O here; the engine fetches the inputs and applies the state machine (state.py).

- threshold: `agg(metric)` over the last `window_s` compared with `value` by `op`; fewer than
  `min_samples` contributing results means "condition does not hold".
- regression: recent window vs. the baseline window right before it. Direction `up` holds when
  recent >= baseline * ratio and/or recent - baseline >= delta (both must hold when both are
  given); `down` mirrors it (recent <= baseline / ratio, baseline - recent >= delta). Both windows
  need their minimum samples.
- absence: no ok result for `absent_for_s`.
- consecutive_failures: the newest `count` results are all not ok.
- doctor, drift: judged by their producers (alerts/deployment.py turns an observation into one).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from monitor.alerts.source import Aggregate, RecentResult
from monitor.config import RuleSettings

__all__ = [
    "Observation",
    "absence",
    "consecutive_failures",
    "format_value",
    "render_annotations",
    "regression",
    "threshold",
]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
# Annotations quote replies and errors from the target; keep each one short.
ANNOTATION_MAX_CHARS = 1000


@dataclass(frozen=True, slots=True)
class Observation:
    """One evaluation of a rule for one probe."""

    met: bool
    value: float | None
    threshold: float | None
    # Extra template fields ({baseline}, {samples}, {error}, ...).
    context: Mapping[str, str] = field(default_factory=dict)


def threshold(rule: RuleSettings, agg: Aggregate) -> Observation:
    assert rule.op is not None and rule.value is not None
    context = {"samples": str(agg.count)}
    if agg.value is None or agg.count < rule.min_samples:
        return Observation(False, agg.value, rule.value, context)
    return Observation(_OPS[rule.op](agg.value, rule.value), agg.value, rule.value, context)


def regression(rule: RuleSettings, recent: Aggregate, baseline: Aggregate) -> Observation:
    context = {
        "samples": str(recent.count),
        "baseline": format_value(baseline.value),
        "baseline_samples": str(baseline.count),
    }
    if (
        recent.value is None
        or baseline.value is None
        or recent.count < rule.min_samples
        or baseline.count < rule.effective_baseline_min_samples
    ):
        return Observation(False, recent.value, None, context)
    now_v, base_v = recent.value, baseline.value
    bars: list[float] = []
    met = True
    if rule.direction == "up":
        if rule.ratio is not None:
            bars.append(base_v * rule.ratio)
            met = met and now_v > base_v and now_v >= base_v * rule.ratio
        if rule.delta is not None:
            bars.append(base_v + rule.delta)
            met = met and now_v - base_v >= rule.delta
        bar = max(bars)
    else:
        if rule.ratio is not None:
            bars.append(base_v / rule.ratio)
            met = met and now_v < base_v and now_v <= base_v / rule.ratio
        if rule.delta is not None:
            bars.append(base_v - rule.delta)
            met = met and base_v - now_v >= rule.delta
        bar = min(bars)
    if base_v:
        context["change_pct"] = f"{(now_v - base_v) / abs(base_v) * 100:+.1f}%"
    return Observation(met, now_v, bar, context)


def absence(rule: RuleSettings, last_ok_at: datetime | None, since: datetime, now: datetime) -> Observation:
    """Holds when nothing ok arrived since max(last ok, `since`) for `absent_for_s`.

    `since` is when watching started (the engine's start), so a fresh daemon waits a full period
    before calling a probe absent; for an alert that is already active the caller passes the
    last ok time only, so a restart does not reset it.
    """
    assert rule.absent_for_s is not None
    reference = since if last_ok_at is None else max(last_ok_at, since)
    silent_s = (now - reference).total_seconds()
    value = (now - last_ok_at).total_seconds() if last_ok_at is not None else None
    context = {"last_ok": last_ok_at.isoformat() if last_ok_at else "never"}
    return Observation(silent_s >= rule.absent_for_s, value, rule.absent_for_s, context)


def consecutive_failures(rule: RuleSettings, newest_first: Sequence[RecentResult]) -> Observation:
    assert rule.count is not None
    streak = 0
    for result in newest_first:
        if result.ok:
            break
        streak += 1
    error = newest_first[0].describe_failure() if newest_first and not newest_first[0].ok else ""
    context = {"error": error[:ANNOTATION_MAX_CHARS]}
    return Observation(streak >= rule.count, float(streak), float(rule.count), context)


def format_value(value: float | None) -> str:
    """A value for people: integers as such, otherwise up to 4 significant digits (n/a for None)."""
    if value is None:
        return "n/a"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.4g}"


class _Template(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _describe(rule: RuleSettings) -> str:
    if rule.kind == "threshold":
        what = f"{rule.effective_agg} {rule.metric}" + (f" ({rule.check})" if rule.check else "")
        return f"{what} = {{value}} {rule.op} {{threshold}} over {format_value(rule.window_s)} s"
    if rule.kind == "regression":
        what = f"{rule.effective_agg} {rule.metric}" + (f" ({rule.check})" if rule.check else "")
        return f"{what} = {{value}} vs baseline {{baseline}} ({{change_pct}}), limit {{threshold}}"
    if rule.kind == "absence":
        return "no successful result for {threshold} s (last ok: {last_ok})"
    if rule.kind == "doctor":
        return "doctor check {check}: {detail}"
    if rule.kind == "drift":
        return "{component} changed: {detail}"
    return "{value} failures in a row: {error}"


def render_annotations(rule: RuleSettings, observation: Observation, probe: str, target: str) -> dict[str, str]:
    """The rule's annotations with {value}, {threshold}, {probe}, {target}, ... filled in.

    `probe` is "" for doctor and drift alerts (they are about a target; see alerts/deployment.py).

    Unknown placeholders are left as written. Without a `summary` annotation a default one is made.
    """
    values = _Template(
        {
            "value": format_value(observation.value),
            "threshold": format_value(observation.threshold),
            "probe": probe,
            "target": target,
            "rule": rule.name,
            "severity": rule.severity,
            "metric": rule.metric or "",
            "agg": rule.effective_agg if rule.metric else "",
            "change_pct": "n/a",
            **observation.context,
        }
    )
    templates = dict(rule.annotations)
    templates.setdefault("summary", f"{rule.name} on {{{'probe' if probe else 'target'}}}: {_describe(rule)}")
    # Deployment alerts carry the doctor's fix or the before/after diff unless the rule says otherwise.
    defaults = {"doctor": {"fix": "{fix}"}, "drift": {"diff": "{diff}", "fix": "{fix}"}}.get(rule.kind, {})
    for key, template in defaults.items():
        templates.setdefault(key, template)
    out: dict[str, str] = {}
    for key, template in templates.items():
        try:
            text = template.format_map(values)
        except (ValueError, IndexError, AttributeError):
            # A stray brace in a hand-written annotation: show it as written rather than fail the rule.
            text = template
        if text or key not in defaults:
            out[key] = text[:ANNOTATION_MAX_CHARS]
    return out
