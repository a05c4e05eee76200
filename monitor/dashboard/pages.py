"""The overview and probe pages (HTML bodies; `layout.page` wraps them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from monitor.alerts.model import AlertView
from monitor.config import RuleSettings
from monitor.dashboard.fmt import DASH, alert_value, fmt_count, fmt_duration_s, fmt_ms, fmt_pct
from monitor.dashboard.layout import badge, probe_url, section, stat, time_el
from monitor.dashboard.markup import Child, Markup, el
from monitor.dashboard.queries import WINDOWS, OneShotRow, Overview, OverviewRow, ProbeDetail, Stats, result_status
from monitor.dashboard.svg import Marker, Series, line_chart, sparkline
from monitor.metric_catalog import metric
from monitor.results import CheckResult
from monitor.store.repo import StoredResult
from monitor.store.server_metrics_repo import ServerStep
from monitor.store.trend import TrendStep

__all__ = ["alert_list", "overview_body", "probe_body", "reply_card"]

_STATUS_LABEL = {"firing": "firing", "error": "error", "failed": "check failed", "ok": "OK", "none": "no data"}
# The probe page's distribution charts: title, metric, and the summaries drawn as lines.
_CHARTS = (
    ("Latency", "latency_ms", ("p50", "p95")),
    ("Time to first token", "ttft_ms", ("p50", "p95")),
    # Reasoning models: the answer starts after the reasoning; a plain model draws TTFA on TTFT.
    ("Time to first answer token", "ttfa_ms", ("p50", "p95")),
    ("Inter-token latency", "itl_ms", ("p50", "p95")),
    ("Completion tokens", "completion_tokens", ("mean", "max")),
    ("Reasoning tokens", "reasoning_tokens", ("mean", "max")),
)
# The target's own /metrics beside the probe's view (targets with `metrics:` only): title, unit, y_max,
# and the lines as (label, field of monitor.server_metrics.FIELDS, "mean" or "max" over the step's scrapes).
_SERVER_CHARTS: tuple[tuple[str, str, float | None, tuple[tuple[str, str, str], ...]], ...] = (
    ("Server queue", "", None, (("waiting (max)", "requests_waiting", "max"), ("running", "requests_running", "mean"))),
    ("Server KV-cache usage", "%", 1.0,
     (("max", "kv_cache_usage_ratio", "max"), ("mean", "kv_cache_usage_ratio", "mean"))),
    ("Server prefix-cache hit rate", "%", 1.0, (("hit rate", "prefix_cache_hit_ratio", "mean"),)),
    ("Server time to first token", "ms", None,
     (("p95", "server_ttft_ms_p95", "mean"), ("mean", "server_ttft_ms_mean", "mean"))),
)  # fmt: skip
# Chart units by catalogue unit (`fmt_value`'s names); counts such as tokens are drawn plain.
_CHART_UNITS = {"ms": "ms", "ratio": "%"}


def _pair(hour: str, day: str) -> Markup:
    """A 1 h value with the 24 h value under it."""
    return el("td", {"class": "num"}, el("span", {"class": "v"}, hour), el("span", {"class": "sub"}, day))


def _rate_class(rate: float | None, *, alarming: bool, expected: bool) -> str:
    if rate is None or rate == 0 or expected:
        return "v"
    return "v bad" if alarming and rate >= 0.05 else "v warn"


def _rates(hour: float | None, day: float | None, *, alarming: bool = True, expected: bool = False) -> Markup:
    """A rate cell; truncation is not `alarming`, and not even a warning where it is `expected`.

    Completion probes are plain continuations that max_tokens cuts on purpose; a cut chat reply is worth a look.
    """
    return el(
        "td",
        {"class": "num"},
        el("span", {"class": _rate_class(hour, alarming=alarming, expected=expected)}, fmt_pct(hour)),
        el("span", {"class": "sub"}, fmt_pct(day)),
    )


def alert_list(alerts: Sequence[AlertView], rules: Mapping[str, RuleSettings], *, empty: str) -> Markup:
    """Alerts as a compact list: severity, rule, probe, value against threshold, since when."""
    if not alerts:
        return el("p", {"class": "all-clear"}, el("span", {"class": "dot-ok", "aria-hidden": "true"}), empty)
    items = []
    for a in alerts:
        probe, target = a.labels.get("probe"), a.labels.get("target")
        where: Child = (
            el("a", {"href": probe_url(target, probe)}, f"{target} / {probe}")
            if probe and target
            else a.labels.get("target", "")
        )
        since = a.fired_at if a.state == "firing" else a.active_since
        value = alert_value(a.value, a.threshold, rules.get(a.rule))
        items.append(
            el(
                "li",
                {"class": f"alert {a.state}"},
                badge(a.state),
                badge(a.severity) if a.severity else None,
                el("strong", {"class": "rule"}, a.rule),
                el("span", {"class": "where"}, where),
                el("span", {"class": "value"}, value) if value else None,
                el("span", {"class": "since"}, "since ", time_el(since, relative=True)),
                badge("silenced", a.muted_by or "silenced") if a.silenced else None,
                el("div", {"class": "summary"}, a.annotations.get("summary")) if a.annotations.get("summary") else None,
            )
        )
    return el("ul", {"class": "alerts"}, items)


def _last_cell(row: OverviewRow) -> Markup:
    last = row.last
    if last is None:
        return el("td", None, el("span", {"class": "muted"}, "never"))
    detail = last.error_kind or (", ".join(last.failed_checks) if last.failed_checks else fmt_ms(last.latency_ms))
    return el(
        "td",
        {"class": "last"},
        time_el(last.started_at, relative=True),
        el("span", {"class": "sub"}, detail),
    )


def _row(row: OverviewRow) -> Markup:
    status = row.status
    h, d = row.hour, row.day
    endpoint = row.settings.endpoint if row.settings else (row.last.endpoint if row.last else "")
    stream = row.settings.stream if row.settings else (row.last.stream if row.last else False)
    name = el(
        "td",
        {"class": "name"},
        el("a", {"href": probe_url(row.target, row.probe)}, row.probe),
        el(
            "span",
            {"class": "sub"},
            f"{endpoint}{' · stream' if stream else ''}",
            " · not in config" if row.settings is None else None,
        ),
    )
    return el(
        "tr",
        {"class": f"row-{status}"},
        el("td", None, badge(status, _STATUS_LABEL.get(status))),
        name,
        el("td", None, row.target),
        _last_cell(row),
        _pair(fmt_ms(h.latency_p95_ms), fmt_ms(d.latency_p95_ms)),
        _pair(fmt_ms(h.ttft_p95_ms), fmt_ms(d.ttft_p95_ms)),
        _rates(h.error_rate, d.error_rate),
        _rates(h.truncation_rate, d.truncation_rate, alarming=False, expected=row.truncation_expected),
        el(
            "td",
            {"class": "spark-cell"},
            sparkline(row.spark_latency_p95_ms, label=f"p95 latency of {row.probe}, last hour"),
        ),
    )


def _oneshot_section(rows: Sequence[OneShotRow]) -> Markup | None:
    """One-shot results of the last day, apart: they reuse probe names but are no part of the daemon's picture."""
    if not rows:
        return None
    head = el("tr", None, [el("th", None, t) for t in ("Command", "Probe", "Target", "Results", "Not OK", "Last")])
    body = [
        el(
            "tr",
            None,
            el("td", None, el("code", None, f"llm-monitor {r.source}")),
            el("td", None, r.probe),
            el("td", None, r.target),
            el("td", {"class": "num"}, fmt_count(r.results)),
            el("td", {"class": "num"}, fmt_count(r.not_ok)),
            el("td", None, time_el(r.last_at, relative=True)),
        )
        for r in rows
    ]
    table = el("table", {"class": "grid"}, el("thead", None, head), el("tbody", None, body))
    hint = el("span", {"class": "hint"}, "last 24 h; not counted in the probes, trends or alerts above")
    return section("One-shot runs", el("div", {"class": "table-scroll"}, table), extra=hint, id_="oneshot")


def overview_body(data: Overview, rules: Mapping[str, RuleSettings]) -> Markup:
    rows = data.rows
    counts = data.counts
    firing = [a for a in data.alerts if a.state == "firing"]
    pending = [a for a in data.alerts if a.state == "pending"]
    tiles = el(
        "div",
        {"class": "stats"},
        stat("Probes", counts["probes"], sub=f"{counts['no_data']} without data" if counts["no_data"] else None),
        stat("Healthy", counts["healthy"], kind="good" if counts["healthy"] else None),
        stat("Failing", counts["failing"], kind="bad" if counts["failing"] else None),
        stat(
            "Alerts firing",
            len(firing),
            sub=f"{len(pending)} pending" if pending else None,
            kind="bad" if firing else None,
        ),
    )
    head = el(
        "tr",
        None,
        [
            el("th", {"class": c} if c else None, t)
            for t, c in (
                ("Status", None),
                ("Probe", None),
                ("Target", None),
                ("Last result", None),
                ("p95 latency", "num"),
                ("p95 TTFT", "num"),
                ("Errors", "num"),
                ("Truncated", "num"),
                ("Latency, last hour", None),
            )
        ],
    )
    table = el(
        "div",
        {"class": "table-scroll"},
        el("table", {"class": "grid overview"}, el("thead", None, head), el("tbody", None, [_row(r) for r in rows])),
    )
    if not rows:
        table = el("p", {"class": "muted"}, "No probes configured and no results stored yet.")
    return el(
        "div",
        None,
        el("h1", None, "Overview"),
        tiles,
        section("Firing alerts", alert_list([*firing, *pending], rules, empty="No alerts firing."), id_="firing"),
        section("Probes", table, extra=el("span", {"class": "hint"}, "last hour, with the last 24 h below")),
        _oneshot_section(data.oneshot),
    )


# --- probe page ---------------------------------------------------------------------------------------------


class _Step(Protocol):
    @property
    def start(self) -> datetime: ...


_S = TypeVar("_S", bound=_Step)


def _chart(
    title: str,
    detail: ProbeDetail,
    lines: Sequence[tuple[str, Callable[[_S], float | None]]],
    unit: str,
    y_max: float | None = None,
    *,
    steps: Sequence[_S],
) -> Markup:
    x_min, x_max = detail.since.timestamp(), detail.until.timestamp()
    half = detail.step_s / 2  # a step's point sits in its middle
    series = [
        Series(name, [(s.start.timestamp() + half, get(s)) for s in steps], style=i)
        for i, (name, get) in enumerate(lines)
    ]
    markers = [
        Marker(m.start.timestamp(), None if m.end is None else m.end.timestamp(), f"{m.rule}: {m.state}", m.state)
        for m in detail.marks
    ]
    svg = line_chart(
        series,
        x_min=x_min,
        x_max=x_max,
        unit=unit,
        label=title,
        markers=markers,
        gap_x=detail.step_s * 2.5,
        y_max=y_max,
    )
    legend = el(
        "ul",
        {"class": "legend"},
        [el("li", None, el("span", {"class": f"swatch s{i}"}), name) for i, (name, _) in enumerate(lines)],
        el("li", None, el("span", {"class": "swatch alert"}), "alert") if markers else None,
    )
    return el("figure", {"class": "chart-box"}, el("figcaption", None, title, legend), svg)


def _summary_line(name: str, stat: str) -> tuple[str, Callable[[TrendStep], float | None]]:
    """A chart line of one summary (`p95`, `mean`, ...) of the distribution `name`."""

    def value(step: TrendStep) -> float | None:
        result: float | None = getattr(step.metrics[name], stat)
        return result

    return stat, value


def _rate_line(name: str) -> tuple[str, Callable[[TrendStep], float | None]]:
    """A chart line of the rate `name`, labelled as people say it (`error rate`)."""
    return name.replace("_", " "), lambda step: step.rates[name]


def _server_line(label: str, name: str, stat: str) -> tuple[str, Callable[[ServerStep], float | None]]:
    return label, lambda step: (step.max if stat == "max" else step.mean)[name]


def _server_charts(detail: ProbeDetail) -> list[Markup]:
    """The target's /metrics charts; one whose values the server never exposed is left out (no empty charts)."""
    steps = detail.server or []
    return [
        _chart(title, detail, [_server_line(*line) for line in lines], unit, y_max, steps=steps)
        for title, unit, y_max, lines in _SERVER_CHARTS
        if any(s.mean[name] is not None for s in steps for _, name, _ in lines)
    ]


def _window_picker(detail: ProbeDetail) -> Markup:
    links = [
        el(
            "a",
            {
                "href": probe_url(detail.target, detail.probe, name),
                "class": "active" if name == detail.window else None,
                "aria-current": "true" if name == detail.window else None,
            },
            name,
        )
        for name in WINDOWS
    ]
    return el("div", {"class": "segmented", "role": "group", "aria-label": "time window"}, links)


def _checks(checks: Sequence[CheckResult]) -> Markup:
    """Failed checks in full (name and detail); passed ones folded into one chip naming them on hover."""
    passed = [c.name for c in checks if c.passed]
    chips = [
        el("li", {"class": "chip bad"}, "✗ ", c.name, el("span", {"class": "chip-detail"}, c.detail))
        for c in checks
        if not c.passed
    ]
    if passed:
        label = f"✓ {len(passed)} checks passed" if len(passed) > 1 else f"✓ {passed[0]}"
        chips.append(el("li", {"class": "chip good", "title": ", ".join(passed)}, label))
    return el("ul", {"class": "chips"}, chips)


def reply_card(r: StoredResult) -> Markup:
    """One stored reply: its numbers, its checks, and its text (escaped: model output is untrusted)."""
    status = result_status(r)
    facts = [
        ("latency", fmt_ms(r.latency_ms)),
        ("TTFT", fmt_ms(r.ttft_ms)),
        (
            "tokens",
            fmt_count(r.completion_tokens) + (" (est.)" if r.tokens_estimated else "")
            if r.completion_tokens is not None
            else DASH,
        ),
        ("finish", r.finish_reason or DASH),
        ("HTTP", str(r.http_status) if r.http_status is not None else DASH),
    ]
    body: list[Child] = []
    if r.error_kind:
        phase = f" ({r.timeout_phase})" if r.timeout_phase else ""
        body.append(el("p", {"class": "error-detail"}, f"{r.error_kind}{phase}: ", r.error_detail or ""))
    if r.checks:
        body.append(_checks(r.checks))
    if r.text_sample is not None:
        body.append(el("pre", {"class": "reply"}, r.text_sample if r.text_sample else "(empty reply)"))
    return el(
        "article",
        {"class": f"reply-card {status}"},
        el(
            "header",
            None,
            badge(status, _STATUS_LABEL.get(status)),
            time_el(r.started_at),
            el("dl", {"class": "facts"}, [(el("dt", None, k), el("dd", None, v)) for k, v in facts]),
        ),
        body,
    )


def _tiles(totals: Stats, window: str, *, truncation_expected: bool) -> Markup:
    rate = fmt_pct(totals.truncation_rate)
    if not totals.truncated:
        truncation = stat("Truncation rate", rate)
    elif truncation_expected:
        truncation = stat("Truncation rate", rate, sub="expected: cut by max_tokens")
    else:
        truncation = stat("Truncation rate", rate, kind="warn")
    return el(
        "div",
        {"class": "stats"},
        stat(f"Results ({window})", fmt_count(totals.results)),
        stat("Latency p50 / p95", f"{fmt_ms(totals.latency_p50_ms)} / {fmt_ms(totals.latency_p95_ms)}"),
        stat("TTFT p95", fmt_ms(totals.ttft_p95_ms)),
        stat("Error rate", fmt_pct(totals.error_rate), kind="bad" if totals.errors else None),
        truncation,
    )


def probe_body(detail: ProbeDetail, rules: Mapping[str, RuleSettings]) -> Markup:
    ps = detail.settings
    meta: list[Child] = [el("span", None, "target ", el("strong", None, detail.target))]
    if detail.target_url:
        meta.append(el("code", None, detail.target_url))
    if ps is not None:
        meta += [
            el("span", None, f"{ps.endpoint}{' · stream' if ps.stream else ''}"),
            el("span", None, f"every {fmt_duration_s(ps.interval_s)}" if ps.cron is None else f"cron {ps.cron}"),
            el("span", None, f"max_tokens {ps.max_tokens}" if ps.max_tokens is not None else "max_tokens unset"),
        ]
    else:
        meta.append(el("span", {"class": "muted"}, "not in the running config"))
    status = result_status(detail.recent[0] if detail.recent else None)
    if any(a.state == "firing" for a in detail.alerts):
        status = "firing"
    rates = ("error_rate", "truncation_rate")
    charts = el(
        "div",
        {"class": "charts"},
        [
            _chart(
                title, detail, [_summary_line(name, stat) for stat in stats], _CHART_UNITS.get(metric(name).unit, ""),
                steps=detail.steps,
            )
            for title, name, stats in _CHARTS
        ],
        _chart(
            "Errors and truncation", detail, [_rate_line(name) for name in rates], _CHART_UNITS["ratio"], y_max=1.0,
            steps=detail.steps,
        ),
        _server_charts(detail),
    )  # fmt: skip
    replies = [reply_card(r) for r in detail.recent] or [el("p", {"class": "muted"}, "No results stored yet.")]
    return el(
        "div",
        None,
        el("p", {"class": "crumbs"}, el("a", {"href": "/"}, "Overview"), " / ", detail.target, " / ", detail.probe),
        el(
            "div",
            {"class": "title-row"},
            el("h1", None, detail.probe, " ", badge(status, _STATUS_LABEL.get(status))),
            _window_picker(detail),
        ),
        el("p", {"class": "meta"}, meta),
        _tiles(detail.totals, detail.window, truncation_expected=detail.truncation_expected),
        section(
            "Alerts on this probe",
            alert_list(
                [a for a in detail.alerts if a.state != "resolved"], rules, empty="No alerts firing on this probe."
            ),
        )
        if detail.alerts
        else None,
        section(
            f"Trends, last {detail.window}",
            charts,
            extra=el("span", {"class": "hint"}, f"one point per {fmt_duration_s(detail.step_s)}"),
        ),
        section("Latest replies", el("div", {"class": "replies"}, replies)),
    )
