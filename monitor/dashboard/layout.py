"""The page shell (head, navigation, refresh control) and small pieces every page uses.

No inline script or style anywhere (the CSP forbids both): behaviour lives in
/static/dashboard.js and looks at `data-*` attributes; looks live in /static/dashboard.css.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote, urlencode

from monitor import __version__
from monitor.alerts.model import iso
from monitor.dashboard.fmt import DASH, fmt_utc
from monitor.dashboard.markup import Child, Markup, el

__all__ = ["NAV", "badge", "page", "probe_url", "section", "stat", "time_el"]

NAV = (
    ("overview", "/", "Overview"),
    ("alerts", "/alerts", "Alerts"),
    ("loadruns", "/loadruns", "Load runs"),
    ("doctor", "/doctor", "Doctor"),
)
DEFAULT_REFRESH_S = 30

# Status word -> badge class and label.
_BADGES = {
    "ok": ("good", "OK"),
    "passed": ("good", "passed"),
    "pass": ("good", "pass"),
    "completed": ("neutral", "completed"),
    "resolved": ("good", "resolved"),
    "failed": ("bad", "failed"),
    "fail": ("bad", "fail"),
    "error": ("bad", "error"),
    "firing": ("bad", "firing"),
    "critical": ("bad", "critical"),
    "pending": ("warn", "pending"),
    "warning": ("warn", "warning"),
    "aborted": ("warn", "aborted"),
    "inconclusive": ("warn", "inconclusive"),
    "running": ("info", "running"),
    "info": ("info", "info"),
    "silenced": ("neutral", "silenced"),
    "none": ("neutral", "no data"),
}


def probe_url(target: str, probe: str, window: str | None = None) -> str:
    url = f"/probes/{quote(target, safe='')}/{quote(probe, safe='')}"
    return f"{url}?{urlencode({'window': window})}" if window else url


def badge(status: str, label: str | None = None) -> Markup:
    kind, text = _BADGES.get(status, ("neutral", status))
    return el("span", {"class": f"badge {kind}"}, label or text)


def time_el(when: datetime | None, *, relative: bool = False) -> Markup:
    """A `<time>` the browser shows in the viewer's zone (relative: "3 min ago", exact time on hover)."""
    if when is None:
        return Markup(DASH)
    attrs: dict[str, object] = {"datetime": iso(when), "title": fmt_utc(when)}
    if relative:
        attrs["data-rel"] = True
    return el("time", attrs, fmt_utc(when))


def stat(label: str, value: Child, sub: Child = None, kind: str | None = None) -> Markup:
    """A summary tile: a big number with a label (and a small line under it)."""
    return el(
        "div",
        {"class": f"stat {kind}" if kind else "stat"},
        el("div", {"class": "stat-label"}, label),
        el("div", {"class": "stat-value"}, value),
        el("div", {"class": "stat-sub"}, sub) if sub is not None else None,
    )


def section(title: str, *children: Child, extra: Child = None, id_: str | None = None) -> Markup:
    return el(
        "section",
        {"class": "panel", "id": id_},
        el("header", {"class": "panel-head"}, el("h2", None, title), extra),
        children,
    )


def page(
    *,
    title: str,
    active: str,
    body: Child,
    asset_version: str,
    firing: int = 0,
    refresh_s: int | None = DEFAULT_REFRESH_S,
    outside: Sequence[Child] = (),
) -> Markup:
    """A whole HTML document. `body` is the live region the page script refreshes; `outside` is not refreshed."""
    nav_links = []
    for key, href, label in NAV:
        count = el("span", {"class": "count bad"}, firing) if key == "alerts" and firing else None
        nav_links.append(el("a", {"href": href, "class": "active" if key == active else None}, label, count))
    head = el(
        "head",
        None,
        Markup('<meta charset="utf-8">'),
        el("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}),
        el("meta", {"name": "referrer", "content": "no-referrer"}),
        el("title", None, f"{title} · llm-monitor"),
        el("link", {"rel": "stylesheet", "href": f"/static/dashboard.css?v={asset_version}"}),
        el("link", {"rel": "icon", "href": f"/static/favicon.svg?v={asset_version}", "type": "image/svg+xml"}),
        el("script", {"src": f"/static/dashboard.js?v={asset_version}", "defer": True}),
    )
    refresh = el(
        "div",
        {"class": "refresh"},
        el("span", {"class": "updated", "id": "updated"}, "updated ", el("span", {"id": "updated-at"}, DASH)),
        el(
            "button",
            {
                "type": "button",
                "id": "refresh-toggle",
                "class": "toggle",
                "aria-pressed": "true",
                "data-refresh": refresh_s or 0,
                "hidden": refresh_s is None,
            },
            "Auto-refresh on",
        ),
    )
    header = el(
        "header",
        {"class": "top"},
        el(
            "div",
            {"class": "top-inner"},
            el(
                "a",
                {"class": "brand", "href": "/"},
                el("span", {"class": "logo", "aria-hidden": "true"}),
                "llm-monitor",
            ),
            el("nav", None, nav_links),
            refresh,
        ),
    )
    footer = el(
        "footer",
        {"class": "foot"},
        f"llm-monitor {__version__} · times in your time zone ",
        el("span", {"id": "tz"}, "(UTC)"),
    )
    main = el("main", {"class": "wrap"}, el("div", {"id": "live", "data-refresh-s": refresh_s or 0}, body), outside)
    doc = el("html", {"lang": "en"}, head, el("body", None, header, main, footer))
    return Markup("<!doctype html>\n") + doc
