"""The load-run pages: the list with SLO verdicts, and one run with its charts, canaries and baseline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from monitor.dashboard.fmt import DASH, fmt_count, fmt_duration_s, fmt_ms, fmt_pct, fmt_value
from monitor.dashboard.layout import badge, probe_url, section, stat, time_el
from monitor.dashboard.markup import Child, Markup, el
from monitor.dashboard.queries import result_status
from monitor.dashboard.queries_load import LoadRunDetail, metrics_of
from monitor.dashboard.svg import Series, line_chart
from monitor.loadtest import report
from monitor.loadtest.repo import LoadRun, SeriesPoint
from monitor.store.views import ResultLine

__all__ = ["load_run_body", "load_runs_body", "run_url"]


def run_url(run_id: int) -> str:
    return f"/loadruns/{int(run_id)}"


def _duration(run: LoadRun) -> float | None:
    summary = run.summary or {}
    if summary.get("duration_s") is not None:
        return float(summary["duration_s"])
    end = run.ended_at or run.heartbeat_at
    return (end - run.started_at).total_seconds()


def _load_shape(params: dict[str, Any]) -> str:
    endpoint = str(params.get("endpoint") or "")
    if params.get("sweep"):
        return f"{endpoint} · sweep"
    if params.get("load_model") == "open" and params.get("rate") is not None:
        return f"{endpoint} · {fmt_count(params['rate'])} req/s open"
    if params.get("users") is not None:
        return f"{endpoint} · {params['users']} users"
    return endpoint


def _verdict(run: LoadRun) -> Markup:
    if run.verdict is None:
        return el("span", {"class": "muted"}, "no SLO")
    return badge(run.verdict, "SLO pass" if run.verdict == "pass" else "SLO fail")


def load_runs_body(runs: Sequence[LoadRun]) -> Markup:
    if not runs:
        empty = el(
            "p",
            {"class": "muted"},
            "No load runs yet. Start one with ",
            el("code", None, "llm-monitor loadtest"),
            " and it shows up here.",
        )
        return el("div", None, el("h1", None, "Load runs"), section("Runs", empty))
    head = ["Run", "Started", "Duration", "Target", "Load", "Status", "SLO", "Req/s", "TTFT p95", "Errors"]
    rows = []
    for run in runs:
        m = metrics_of(run)
        rows.append(
            el(
                "tr",
                None,
                el("td", None, el("a", {"href": run_url(run.id)}, f"#{run.id}")),
                el("td", None, time_el(run.started_at)),
                el("td", {"class": "num"}, fmt_duration_s(_duration(run))),
                el("td", None, run.target, el("span", {"class": "sub"}, run.model) if run.model else None),
                el("td", None, _load_shape(run.params)),
                el("td", None, badge(run.status)),
                el("td", None, _verdict(run)),
                el("td", {"class": "num"}, fmt_count(m.get("rps"))),
                el("td", {"class": "num"}, fmt_ms(m.get("ttft_p95_ms"))),
                el("td", {"class": "num"}, fmt_pct(m.get("error_rate"))),
            )
        )
    table = el(
        "div",
        {"class": "table-scroll"},
        el(
            "table",
            {"class": "grid"},
            el("thead", None, el("tr", None, [el("th", None, h) for h in head])),
            el("tbody", None, rows),
        ),
    )
    return el("div", None, el("h1", None, "Load runs"), section(f"Runs ({len(runs)})", table))


Getter = Callable[[SeriesPoint], float | None]


def _grid(head: Markup, rows: Sequence[Markup], klass: str = "grid") -> Markup:
    """A table that scrolls sideways on a narrow screen."""
    return el(
        "div",
        {"class": "table-scroll"},
        el("table", {"class": klass}, el("thead", None, head), el("tbody", None, rows)),
    )


def _per_s(field: str) -> Getter:
    return lambda p: float(getattr(p, field))


def _server(field: str) -> Getter:
    return lambda p: None if p.server is None else p.server.get(field)


def _server_charts(detail: LoadRunDetail) -> Markup:
    """The server's own /metrics per second: where it saturates (queue, KV cache), its TTFT beside ours."""
    server = (detail.run.summary or {}).get("server") or {}
    note = el("p", {"class": "muted"}, str(server.get("source") or "Not scraped (a run from before server metrics)."))
    if not any(p.server is not None for p in detail.series):
        return note
    return el(
        "div",
        None,
        note,
        el(
            "div",
            {"class": "charts"},
            _load_chart(detail, "Server queue",
                        [("waiting", _server("requests_waiting")), ("running", _server("requests_running"))], ""),
            _load_chart(detail, "Server KV-cache usage", [("used", _server("kv_cache_usage_ratio"))], "%"),
            _load_chart(detail, "TTFT p95: server vs client",
                        [("server", _server("server_ttft_ms_p95")), ("client", lambda p: p.ttft_p95_ms)], "ms"),
            _load_chart(detail, "Server prefix-cache hit rate", [("hits", _server("prefix_cache_hit_ratio"))],
                        "%"),
        ),
    )  # fmt: skip


def _load_chart(detail: LoadRunDetail, title: str, lines: Sequence[tuple[str, Getter]], unit: str) -> Markup:
    series: list[Series] = []
    for i, (name, get) in enumerate(lines):
        series.append(Series(name, [(float(p.t_s), get(p)) for p in detail.series], style=i))
        if detail.baseline is not None:
            base = [(float(p.t_s), get(p)) for p in detail.baseline_series]
            series.append(Series(f"{name} (#{detail.baseline.id})", base, style=i, dashed=True))
    x_max = max([p.t_s for p in [*detail.series, *detail.baseline_series]], default=1)
    svg = line_chart(series, x_min=0.0, x_max=float(x_max), unit=unit, label=title, elapsed=True, gap_x=2.5)
    legend = [el("li", None, el("span", {"class": f"swatch s{i}"}), name) for i, (name, _) in enumerate(lines)]
    if detail.baseline is not None:
        legend.append(el("li", None, el("span", {"class": "swatch dashed"}), f"baseline #{detail.baseline.id}"))
    return el(
        "figure", {"class": "chart-box"}, el("figcaption", None, title, el("ul", {"class": "legend"}, legend)), svg
    )


def _bars(title: str, unit: str, labels: list[str], series: list[report.BarSeries]) -> Markup:
    # The shared bar chart (monitor.loadtest.report) escapes its own text: trusted markup from here on.
    return el(
        "figure",
        {"class": "chart-box"},
        el("figcaption", None, title),
        Markup(report.bar_chart(title, unit, labels, series)),
    )


def _workload(detail: LoadRunDetail) -> Markup | None:
    """Where the prompts came from, their token lengths, TTFT by session turn; None for an older run."""
    summary = detail.run.summary or {}
    lines: list[Child] = [el("p", None, line) for line in report.workload_lines(summary)]
    charts: list[Child] = []
    for name, stats in report.lengths(summary).items():
        bins = report.length_bins(stats)
        labels = [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi, _ in bins]
        lines.append(el("p", None, report.length_text(name, stats)))
        charts.append(
            _bars(f"{name.capitalize()} length", "requests", labels, [("requests", [float(c) for _, _, c in bins])])
        )
    turns = report.turn_rows(summary)
    table = None
    if turns:
        labels = [str(r["turn"]) for r in turns]
        charts.append(
            _bars(
                "TTFT by session turn",
                "ms",
                labels,
                [(f"p{p}", [r.get(f"ttft_p{p}_ms") for r in turns]) for p in (50, 95)],
            )
        )
        head = el(
            "tr",
            None,
            [el("th", {"class": "num"}, h) for h in ("Turn", "Requests", "TTFT p50", "TTFT p95", "TTFT p99")],
        )
        rows = [
            el(
                "tr",
                None,
                el("td", {"class": "num"}, r["turn"]),
                el("td", {"class": "num"}, fmt_count(r.get("requests"))),
                [el("td", {"class": "num"}, fmt_ms(r.get(f"ttft_p{p}_ms"))) for p in (50, 95, 99)],
            )
            for r in turns
        ]
        table = _grid(head, rows, "grid turns")
    if not lines and not charts:
        return None
    return el("div", None, lines, el("div", {"class": "charts"}, charts) if charts else None, table)


def _trust(detail: LoadRunDetail) -> Markup | None:
    """The generator's own error: the refusal, bounds on TTFT/ITL error, read lag per second, CPU per process."""
    trust = report.trust(detail.run.summary or {})
    drawn = any(p.read_lag_p99_ms is not None or p.ttft_err_p99_ms is not None for p in detail.series)
    if trust.empty and not drawn:
        return None
    parts: list[Child] = []
    if trust.refusal:
        parts.append(el("p", {"class": "notice bad refusal"}, trust.refusal))
    parts += [el("p", None, report.bound_text(label, values)) for label, values in trust.bounds]
    parts += [el("p", {"class": "muted"}, note) for note in trust.notes]
    if drawn:
        lag = [("read lag p99", lambda p: p.read_lag_p99_ms), ("TTFT error p99", lambda p: p.ttft_err_p99_ms)]
        parts.append(el("div", {"class": "charts"}, _load_chart(detail, "Generator read lag", lag, "ms")))
    if trust.processes:
        head = el(
            "tr",
            None,
            el("th", None, "Process"),
            el("th", None, "Role"),
            el("th", {"class": "num"}, "CPU"),
            el("th", {"class": "num"}, "Of one core"),
        )
        rows = [
            el(
                "tr",
                None,
                el("td", None, name),
                el("td", None, role),
                el("td", {"class": "num"}, fmt_value(cpu_s, "s")),
                el("td", {"class": "num"}, fmt_pct(busy)),
            )
            for name, role, cpu_s, busy in trust.processes
        ]
        parts.append(_grid(head, rows))
    return el("div", None, parts)


def _sweep(run: LoadRun) -> Markup | None:
    """The sweep's steps with goodput, the knee marked; None when the run was not a sweep."""
    sweep = (run.summary or {}).get("sweep")
    if not isinstance(sweep, dict) or not sweep.get("steps"):
        return None
    knee = report.knee_index(sweep)
    head = el(
        "tr",
        None,
        [
            el("th", {"class": "num"}, h)
            for h in ("Offered req/s", "Finished req/s", "TTFT p95", "Goodput", "Good req/s", "Kept up", "SLO")
        ],
    )
    rows = []
    for i, st in enumerate(sweep["steps"]):
        m = st.get("metrics") or {}
        rows.append(
            el(
                "tr",
                {"class": "knee" if i == knee else None},
                el("td", {"class": "num"}, f"{st.get('rate', 0):g}", " (knee)" if i == knee else None),
                el("td", {"class": "num"}, fmt_count(m.get("rps"))),
                el("td", {"class": "num"}, fmt_ms(m.get("ttft_p95_ms"))),
                el("td", {"class": "num"}, fmt_pct(m.get("goodput_rate"))),
                el("td", {"class": "num"}, fmt_count(m.get("goodput_rps"))),
                el("td", {"class": "num"}, "yes" if st.get("kept_up") else "no"),
                el("td", {"class": "num"}, badge(mark) if (mark := report.step_mark(st)) else DASH),
            )
        )
    best = sweep.get("goodput_rps")
    note = el(
        "p",
        None,
        "Highest sustainable rate: ",
        el("strong", None, DASH if best is None else f"{best:g} req/s"),
        f"; knee at {sweep['steps'][knee].get('rate', 0):g} req/s offered" if knee is not None else None,
    )
    text = report.saturation_text(sweep)
    saturated = el("p", None, text) if text else None
    return el(
        "div",
        None,
        note,
        saturated,
        _grid(head, rows),
    )


def _slo_table(run: LoadRun) -> Markup:
    if not run.slo:
        return el("p", {"class": "muted"}, "No SLO was given for this run.")
    rows = []
    for clause in run.slo:
        metric = str(clause.get("metric", ""))
        unit = "ms" if metric.endswith("_ms") else "%" if metric.endswith("_rate") else ""
        rows.append(
            el(
                "tr",
                None,
                el("td", None, el("code", None, metric)),
                el("td", {"class": "num"}, f"{clause.get('op', '')} {fmt_value(clause.get('threshold'), unit)}"),
                el("td", {"class": "num"}, fmt_value(clause.get("value"), unit)),
                el("td", None, badge("pass" if clause.get("passed") else "fail")),
            )
        )
    head = el(
        "tr",
        None,
        [
            el("th", None, "Objective"),
            el("th", {"class": "num"}, "Target"),
            el("th", {"class": "num"}, "Measured"),
            el("th", None, ""),
        ],
    )
    return _grid(head, rows)


def _canaries(canaries: Sequence[ResultLine]) -> Markup:
    if not canaries:
        return el("p", {"class": "muted"}, "No canary probes ran during this load run.")
    rows = []
    for c in canaries:
        status = result_status(c)
        detail = c.error_kind or ", ".join(c.failed_checks) or c.finish_reason or DASH
        rows.append(
            el(
                "tr",
                None,
                el("td", None, time_el(c.started_at)),
                el("td", None, el("a", {"href": probe_url(c.target, c.probe)}, c.probe)),
                el("td", None, badge(status)),
                el("td", {"class": "num"}, fmt_ms(c.ttft_ms)),
                el("td", {"class": "num"}, fmt_ms(c.latency_ms)),
                el("td", None, detail),
            )
        )
    head = el(
        "tr",
        None,
        [
            el("th", {"class": "num"} if h in ("TTFT", "Latency") else None, h)
            for h in ("Time", "Probe", "Result", "TTFT", "Latency", "Detail")
        ],
    )
    return _grid(head, rows)


def _comparison(detail: LoadRunDetail) -> Markup:
    picker = el(
        "form",
        {"class": "inline-form", "method": "get", "action": run_url(detail.run.id)},
        el(
            "label",
            None,
            "Baseline ",
            el(
                "select",
                {"name": "baseline"},
                el("option", {"value": ""}, "none"),
                [
                    el(
                        "option",
                        {"value": r.id, "selected": detail.baseline is not None and r.id == detail.baseline.id},
                        f"#{r.id} · {r.started_at:%Y-%m-%d %H:%M} UTC · {r.status}",
                    )
                    for r in detail.others
                ],
            ),
        ),
        el("button", {"type": "submit", "class": "small"}, "Compare"),
    )
    if detail.baseline is None:
        return el("div", None, picker, el("p", {"class": "muted"}, "Pick a baseline run to compare against."))
    rows = []
    for c in detail.comparison:
        change = DASH if c.change is None else f"{c.change * 100:+.1f} %"
        rows.append(
            el(
                "tr",
                None,
                el("td", None, c.label),
                el("td", {"class": "num"}, fmt_value(c.value, c.unit)),
                el("td", {"class": "num"}, fmt_value(c.baseline, c.unit)),
                el("td", {"class": f"num delta {c.verdict}"}, change),
            )
        )
    head = el(
        "tr",
        None,
        el("th", None, "Metric"),
        el("th", {"class": "num"}, f"This run #{detail.run.id}"),
        el("th", {"class": "num"}, f"Baseline #{detail.baseline.id}"),
        el("th", {"class": "num"}, "Change"),
    )
    table = _grid(head, rows)
    return el("div", None, picker, table)


def _params(run: LoadRun) -> Markup:
    shown = (
        "endpoint",
        "load_model",
        "users",
        "rate",
        "arrival",
        "shape",
        "stages",
        "duration_s",
        "max_tokens",
        "stream",
        "workers",
        "slo",
        "goodput",
    )
    items: list[Child] = []
    for key in shown:
        value = run.params.get(key)
        if value is not None and value != "":
            items += [el("dt", None, key), el("dd", None, str(value))]
    return el("dl", {"class": "params"}, items)


def load_run_body(detail: LoadRunDetail) -> Markup:
    run = detail.run
    m = metrics_of(run)
    tiles = el(
        "div",
        {"class": "stats"},
        stat("Requests/s", fmt_count(m.get("rps"))),
        stat("Output tokens/s", fmt_count(m.get("tokens_per_s"))),
        stat("TTFT p50 / p95", f"{fmt_ms(m.get('ttft_p50_ms'))} / {fmt_ms(m.get('ttft_p95_ms'))}"),
        stat("ITL p95", fmt_ms(m.get("itl_p95_ms"))),
        stat("Error rate", fmt_pct(m.get("error_rate")), kind="bad" if m.get("error_rate") else None),
        stat("Canaries OK", fmt_pct(m.get("canary_ok_rate")), sub=f"{len(detail.canaries)} canaries"),
    )
    charts = el(
        "div",
        {"class": "charts"},
        _load_chart(detail, "Request rate", [("requests/s", _per_s("requests"))], "/s"),
        _load_chart(
            detail, "Time to first token", [("p50", lambda p: p.ttft_p50_ms), ("p95", lambda p: p.ttft_p95_ms)], "ms"
        ),
        _load_chart(
            detail, "Inter-token latency", [("p50", lambda p: p.itl_p50_ms), ("p95", lambda p: p.itl_p95_ms)], "ms"
        ),
        _load_chart(detail, "Output tokens/s", [("tokens/s", _per_s("output_tokens"))], "/s"),
        _load_chart(detail, "Errors", [("failures/s", _per_s("failures"))], "/s"),
        _load_chart(detail, "Goodput", [("good/s", _per_s("good")), ("finished/s", _per_s("requests"))], "/s")
        if any(p.goodput_judged for p in detail.series)
        else None,
    )
    summary = run.summary or {}
    goodput = report.goodput_text(summary, run.params)
    refusal = report.trust(summary).refusal
    workload, trust, sweep = _workload(detail), _trust(detail), _sweep(run)
    abort = el("p", {"class": "notice bad"}, "Aborted: ", run.abort_reason) if run.abort_reason else None
    return el(
        "div",
        None,
        el("p", {"class": "crumbs"}, el("a", {"href": "/loadruns"}, "Load runs"), f" / #{run.id}"),
        el(
            "div", {"class": "title-row"}, el("h1", None, f"Load run #{run.id} ", badge(run.status), " ", _verdict(run))
        ),
        el(
            "p",
            {"class": "meta"},
            el("span", None, "target ", el("strong", None, run.target)),
            el("span", None, run.model) if run.model else None,
            el("span", None, "started ", time_el(run.started_at)),
            el("span", None, fmt_duration_s(_duration(run))),
        ),
        abort,
        el("p", {"class": "notice bad refusal"}, refusal) if refusal else None,
        tiles,
        el("p", None, goodput) if goodput else None,
        section("Service-level objectives", _slo_table(run)),
        section("Sweep", sweep) if sweep is not None else None,
        section(
            "Over time",
            charts if detail.series else el("p", {"class": "muted"}, "No per-second data."),
            extra=el("span", {"class": "hint"}, "seconds since the first request"),
        ),
        section("Workload", workload) if workload is not None else None,
        section("How far to trust these numbers", trust) if trust is not None else None,
        section("Server (its own /metrics)", _server_charts(detail)),
        section("Compared with a baseline", _comparison(detail)),
        section(f"Canaries during the run ({len(detail.canaries)})", _canaries(detail.canaries)),
        section("Parameters", _params(run)),
    )
