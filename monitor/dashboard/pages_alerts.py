"""The alerts page: firing, pending and resolved alerts, silences, and the silence forms.

The forms are sent by /static/dashboard.js to the daemon's JSON API (`/api/v1/silences`) with the
token typed into the password field as a bearer header. The token never reaches the server's
pages: it lives only in that input, outside the region that auto-refresh replaces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from monitor.alerts.model import AlertView, SilenceView
from monitor.config import RuleSettings, Settings
from monitor.dashboard.fmt import DASH, alert_value
from monitor.dashboard.layout import badge, probe_url, section, time_el
from monitor.dashboard.markup import Child, Markup, el

__all__ = ["EXPIRED_SHOWN", "alerts_body", "silence_forms"]

EXPIRED_SHOWN = 20
# Annotations shown under an alert's rule name, in this order (templated by the engine; escaped here).
ANNOTATIONS = ("summary", "description", "runbook_url")
DURATIONS = (
    ("30m", 1800),
    ("1h", 3600),
    ("2h", 7200),
    ("4h", 14400),
    ("8h", 28800),
    ("1d", 86400),
    ("3d", 259200),
    ("7d", 604800),
)


def _silence_button(a: AlertView) -> Markup:
    attrs: dict[str, object] = {"type": "button", "class": "small", "data-silence-alertname": a.rule}
    for label in ("probe", "target"):
        if a.labels.get(label):
            attrs[f"data-silence-{label}"] = a.labels[label]
    return el("button", attrs, "Silence…")


def _alerts_table(
    alerts: Sequence[AlertView], state: str, can_write: bool, rules: Mapping[str, RuleSettings]
) -> Markup:
    if not alerts:
        return el("p", {"class": "muted"}, f"No {state} alerts.")
    head = ["Severity", "Rule", "Probe", "Measured", "Since", "Resolved" if state == "resolved" else "Muted"]
    rows = []
    for a in alerts:
        since = a.active_since if state == "pending" else a.fired_at
        last = time_el(a.resolved_at, relative=True) if state == "resolved" else (a.muted_by or DASH)
        rows.append(
            el(
                "tr",
                None,
                el("td", None, badge(a.severity) if a.severity else DASH),
                el(
                    "td",
                    None,
                    el("strong", None, a.rule),
                    [el("span", {"class": "sub"}, a.annotations[key]) for key in ANNOTATIONS if a.annotations.get(key)],
                ),
                el("td", None, _subject(a.labels)),
                el("td", {"class": "measured"}, alert_value(a.value, a.threshold, rules.get(a.rule))),
                el("td", None, time_el(since, relative=True)),
                el("td", None, last),
                el("td", None, _silence_button(a)) if can_write and state != "resolved" else None,
            )
        )
    heads = [el("th", None, h) for h in head]
    if can_write and state != "resolved":
        heads.append(el("th", None, ""))
    return el(
        "div",
        {"class": "table-scroll"},
        el("table", {"class": "grid"}, el("thead", None, el("tr", None, heads)), el("tbody", None, rows)),
    )


def _matchers(matchers: dict[str, str]) -> Markup:
    return el("ul", {"class": "chips"}, [el("li", {"class": "chip"}, f"{k}={v}") for k, v in sorted(matchers.items())])


def _silences_table(silences: Sequence[SilenceView], now: datetime, can_write: bool) -> Markup:
    active = [s for s in silences if s.expired_at is None and s.ends_at > now]
    expired = [s for s in silences if s not in active][:EXPIRED_SHOWN]
    if not active and not expired:
        return el("p", {"class": "muted"}, "No silences.")
    rows = []
    for s in [*active, *expired]:
        if s in active:
            state = badge("running", "active") if s.starts_at <= now else badge("info", "scheduled")
        else:
            state = badge("none", "expired")
        expire = (
            el("button", {"type": "button", "class": "small danger", "data-expire-silence": s.id}, "Expire")
            if can_write and s in active
            else None
        )
        rows.append(
            el(
                "tr",
                {"class": None if s in active else "dim"},
                el("td", {"class": "num"}, s.id),
                el("td", None, state),
                el("td", None, _matchers(s.matchers)),
                el("td", None, time_el(s.starts_at)),
                el("td", None, time_el(s.expired_at or s.ends_at)),
                el("td", {"class": "comment"}, s.comment),
                el("td", None, s.created_by),
                el("td", None, expire),
            )
        )
    head = el(
        "tr", None, [el("th", None, h) for h in ("#", "State", "Matchers", "Starts", "Ends", "Comment", "By", "")]
    )
    return el(
        "div",
        {"class": "table-scroll"},
        el("table", {"class": "grid"}, el("thead", None, head), el("tbody", None, rows)),
    )


def alerts_body(
    alerts: Sequence[AlertView],
    silences: Sequence[SilenceView],
    now: datetime,
    can_write: bool,
    rules: Mapping[str, RuleSettings],
) -> Markup:
    by_state = {state: [a for a in alerts if a.state == state] for state in ("firing", "pending", "resolved")}
    return el(
        "div",
        None,
        el("h1", None, "Alerts"),
        section(
            f"Firing ({len(by_state['firing'])})",
            _alerts_table(by_state["firing"], "firing", can_write, rules),
            id_="firing",
        ),
        section(
            f"Pending ({len(by_state['pending'])})", _alerts_table(by_state["pending"], "pending", can_write, rules)
        ),
        section(
            f"Resolved ({len(by_state['resolved'])})", _alerts_table(by_state["resolved"], "resolved", can_write, rules)
        ),
        section("Silences", _silences_table(silences, now, can_write), id_="silences"),
    )


def _field(label: str, control: Markup, hint: Child = None) -> Markup:
    return el(
        "label",
        {"class": "field"},
        el("span", None, label),
        control,
        el("small", None, hint) if hint is not None else None,
    )


def _datalist(id_: str, values: Sequence[str]) -> Markup:
    return el("datalist", {"id": id_}, [el("option", {"value": v}) for v in values])


def silence_forms(settings: Settings) -> Markup:
    """The add-silence form and the token field (outside the auto-refreshed region)."""
    can_write = settings.api_token is not None
    notice = None
    if not can_write:
        notice = el(
            "p",
            {"class": "notice"},
            "Changing silences from the dashboard needs an API token: set ",
            el("code", None, "api.token_env"),
            " in the config and restart the daemon. Without one, use ",
            el("code", None, "llm-monitor silence add"),
            ".",
        )
    duration = el(
        "select",
        {"name": "duration_s"},
        [el("option", {"value": s, "selected": s == 7200}, label) for label, s in DURATIONS],
    )
    form = el(
        "form",
        {"id": "silence-form", "class": "form", "data-api": "/api/v1/silences", "autocomplete": "off"},
        el(
            "fieldset",
            {"disabled": not can_write},
            el(
                "div",
                {"class": "form-grid"},
                _field(
                    "Rule (alertname)",
                    el("input", {"name": "alertname", "list": "dl-rules", "placeholder": "high-ttft"}),
                ),
                _field("Probe", el("input", {"name": "probe", "list": "dl-probes", "placeholder": "any"})),
                _field("Target", el("input", {"name": "target", "list": "dl-targets", "placeholder": "any"})),
                _field("For", duration),
                _field(
                    "Comment", el("input", {"name": "comment", "required": True, "placeholder": "why is it muted?"})
                ),
                _field("Created by", el("input", {"name": "created_by", "value": "dashboard", "maxlength": 200})),
                _field(
                    "API token",
                    el(
                        "input",
                        {
                            "type": "password",
                            "name": "token",
                            "id": "api-token",
                            "required": True,
                            "autocomplete": "off",
                            "spellcheck": "false",
                        },
                    ),
                    "sent as a bearer header to the API; never stored",
                ),
            ),
            el(
                "div",
                {"class": "form-actions"},
                el("button", {"type": "submit", "class": "primary"}, "Add silence"),
                el("span", {"class": "form-msg", "id": "form-msg", "role": "status", "aria-live": "polite"}),
            ),
        ),
        _datalist("dl-rules", [r.name for r in settings.rules]),
        _datalist("dl-probes", [p.name for p in settings.probes]),
        _datalist("dl-targets", [t.name for t in settings.targets]),
    )
    return section("Add a silence", notice, form, id_="add-silence")


def _subject(labels: Mapping[str, str]) -> Markup | str:
    """What the alert is about: the probe (linked), or a doctor check / fingerprint component of a target."""
    probe, target = labels.get("probe"), labels.get("target")
    if probe and target:
        return el("a", {"href": probe_url(target, probe)}, f"{target} / {probe}")
    if target and (labels.get("check") or labels.get("component")):
        what = f"check {labels['check']}" if labels.get("check") else f"component {labels['component']}"
        return f"{target} / {what}"
    return target or DASH
