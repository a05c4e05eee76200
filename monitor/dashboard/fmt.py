"""Number and time formatting shared by the pages and the charts (plain text; callers escape)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from monitor.config import RuleSettings
from monitor.metric_catalog import metric

__all__ = ["alert_unit", "alert_value", "fmt_count", "fmt_duration_s", "fmt_ms", "fmt_pct", "fmt_utc", "fmt_value"]

DASH = "–"


def fmt_ms(value: float | None) -> str:
    """`812 ms`, `1.24 s`, `63 s`: milliseconds as people read them."""
    if value is None or not math.isfinite(value):
        return DASH
    if value < 10:
        return f"{value:.1f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 10_000:
        return f"{value / 1000:.2f} s"
    return f"{value / 1000:.0f} s"


def fmt_pct(rate: float | None) -> str:
    """A fraction as a percentage: `0 %`, `0.4 %`, `12 %`."""
    if rate is None or not math.isfinite(rate):
        return DASH
    pct = rate * 100
    if pct == 0:
        return "0 %"
    if pct < 10:
        return f"{pct:.1f} %"
    return f"{pct:.0f} %"


def fmt_count(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k"
    if value == int(value):
        return f"{int(value)}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def fmt_value(value: float | None, unit: str) -> str:
    """A value with its unit: `ms` (milliseconds), `%` (a fraction shown as percent), `/s`, or plain."""
    if unit == "ms":
        return fmt_ms(value)
    if unit == "%":
        return fmt_pct(value)
    text = fmt_count(value)
    return f"{text} {unit}" if unit and text != DASH else text


def fmt_duration_s(seconds: float | None) -> str:
    """`45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`."""
    if seconds is None or not math.isfinite(seconds):
        return DASH
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min" + (f" {s % 60} s" if s < 600 and s % 60 else "")
    if s < 86400:
        return f"{s // 3600} h" + (f" {s % 3600 // 60} min" if s % 3600 >= 60 else "")
    return f"{s // 86400} d" + (f" {s % 86400 // 3600} h" if s % 86400 >= 3600 else "")


def fmt_utc(when: datetime) -> str:
    """The server-side fallback text of a `<time>` element (the browser rewrites it to local time)."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def alert_unit(rule: RuleSettings | None) -> str:
    """The unit of an alert's value and threshold: `ms`, `%`, `s` (absence), or none."""
    if rule is None:
        return ""
    if rule.kind == "absence":
        return "s"
    if rule.metric is None:
        return ""
    unit = metric(rule.metric).unit  # the catalogue's: ms, tokens or ratio
    return {"ms": "ms", "ratio": "%"}.get(unit, "")


def _with_unit(value: float | None, unit: str) -> str:
    return fmt_duration_s(value) if unit == "s" else fmt_value(value, unit)


def alert_value(value: float | None, threshold: float | None, rule: RuleSettings | None) -> str:
    """What an alert measured, for people: `p95 latency_ms 1.02 s > 500 ms`, `3 failures in a row`."""
    unit = alert_unit(rule)
    shown, limit = _with_unit(value, unit), _with_unit(threshold, unit)
    if rule is None:
        return shown if threshold is None else f"{shown} (threshold {limit})"
    what = f"{rule.effective_agg} {rule.metric}" + (f" ({rule.check})" if rule.check else "")
    if rule.kind == "threshold":
        return f"{what} {shown} {rule.op} {limit}"
    if rule.kind == "regression":
        return f"{what} {shown}, limit {limit}"
    if rule.kind == "absence":
        return f"no success for {shown} (limit {limit})" if value is not None else f"no success yet (limit {limit})"
    if rule.kind in ("doctor", "drift"):  # no number: the summary annotation says what changed
        return DASH
    return f"{fmt_count(value)} failures in a row"
