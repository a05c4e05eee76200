"""A self-contained HTML report of one load run: tables plus inline SVG time-series charts.

No scripts, no fonts, no CDN: the file can be mailed or attached to a ticket and still render.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from monitor.loadtest import report
from monitor.loadtest.cost import quality_cost_notes
from monitor.loadtest.repo import SeriesPoint
from monitor.loadtest.runner import RunOutcome
from monitor.loadtest.summary import (
    REGRESSION_METRICS,
    hidden_metrics,
    reasoning_notes,
    regressions,
    server_fmt,
    server_rows,
)

__all__ = ["render_html"]

WIDTH, HEIGHT = 760, 210
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 64, 16, 28, 30
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea")

_Series = tuple[str, list[tuple[float, float | None]]]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:820px;color:#111}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}table{border-collapse:collapse;margin:8px 0}
td,th{border-bottom:1px solid #e5e7eb;padding:3px 10px;text-align:right}td:first-child,th:first-child{text-align:left}
.pass{color:#15803d;font-weight:600}.fail{color:#b91c1c;font-weight:600}.muted{color:#6b7280}
.refusal{border:2px solid #b91c1c;padding:8px 12px;color:#b91c1c;font-weight:600}tr.knee td{font-weight:600}
svg{display:block;margin:6px 0 18px}svg text{font-size:11px;fill:#374151}
"""


def _esc(value: object) -> str:
    return html.escape(str(value))


def _fmt(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name.endswith("_rate"):
        return f"{100 * float(value):.2f}%"
    if name in ("requests", "failures", "sent"):
        return f"{int(value):,}"
    return f"{float(value):,.1f}"


def _chart(title: str, unit: str, series: Sequence[_Series]) -> str:
    """A line chart; None values break the line (seconds in which nothing was measured)."""
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts if y is not None]
    if not xs or not ys:
        return f"<p class=muted>{_esc(title)}: no data</p>"
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    ymax = report.nice_top(max(ys))
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM

    def sx(x: float) -> float:
        return PAD_LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return PAD_TOP + plot_h - y / ymax * plot_h

    parts = [f'<svg width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">']
    parts.append(f'<text x="{PAD_LEFT}" y="16" font-weight="600">{_esc(title)} ({_esc(unit)})</text>')
    for i in range(5):
        y = ymax * i / 4
        py = sy(y)
        parts.append(f'<line x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{py:.1f}" y2="{py:.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{PAD_LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{report.tick(y)}</text>')
    for i in range(6):
        x = x0 + (x1 - x0) * i / 5
        parts.append(f'<text x="{sx(x):.1f}" y="{HEIGHT - 10}" text-anchor="middle">{x:.0f}s</text>')
    legend_x = WIDTH - PAD_RIGHT
    for index, (label, points) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        for segment in _segments(points):
            coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in segment)
            if len(segment) == 1:
                cx, cy = sx(segment[0][0]), sy(segment[0][1])
                parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2" fill="{colour}"/>')
            else:
                parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{coords}"/>')
        legend_x -= 8 + 7 * len(label)
        parts.append(f'<text x="{legend_x}" y="16" fill="{colour}" style="fill:{colour}">{_esc(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _segments(points: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    segments: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None:
            if segments[-1]:
                segments.append([])
        else:
            segments[-1].append((x, y))
    return [s for s in segments if s]


def _line(series: list[SeriesPoint], name: str) -> list[tuple[float, float | None]]:
    return [(float(p.t_s), getattr(p, name)) for p in series]


def _charts(outcome: RunOutcome) -> list[str]:
    s = outcome.series
    open_loop = outcome.params.get("load_model") == "open"
    split = "ttfa_p95_ms" not in hidden_metrics(outcome.summary)
    throughput: list[_Series] = [("finished/s", [(float(p.t_s), float(p.requests)) for p in s])]
    if open_loop:
        throughput.append(("offered/s", [(float(p.t_s), float(p.sent)) for p in s]))
    throughput.append(("failed/s", [(float(p.t_s), float(p.failures)) for p in s]))
    first: list[_Series] = [("p50", _line(s, "ttft_p50_ms")), ("p95", _line(s, "ttft_p95_ms"))]
    tokens: list[_Series] = [("tokens/s", [(float(p.t_s), float(p.output_tokens)) for p in s])]
    if split:
        first = [("TTFT p50", first[0][1]), ("TTFT p95", first[1][1]),
                 ("TTFA p50", _line(s, "ttfa_p50_ms")), ("TTFA p95", _line(s, "ttfa_p95_ms"))]  # fmt: skip
        tokens.append(("reasoning/s", [(float(p.t_s), float(p.reasoning_tokens)) for p in s]))
    title = "Time to first token and first answer token" if split else "Time to first token"
    charts = [
        _chart("Requests", "per second", throughput),
        _chart(title, "ms", first),
        _chart("Inter-token latency", "ms", [("p50", _line(s, "itl_p50_ms")), ("p95", _line(s, "itl_p95_ms"))]),
        _chart("End-to-end latency", "ms", [("p50", _line(s, "e2e_p50_ms")), ("p95", _line(s, "e2e_p95_ms"))]),
        _chart("Output tokens", "per second", tokens),
    ]
    if any(p.goodput_judged for p in s):
        good: list[_Series] = [("good/s", [(float(p.t_s), float(p.good)) for p in s]), throughput[0]]
        charts.append(_chart("Goodput: requests meeting --goodput", "per second", good))
    if open_loop:
        charts.append(_chart("Schedule lag", "ms", [("p95", _line(s, "lag_p95_ms"))]))
    else:
        users = [(float(p.t_s), float(p.users) if p.users is not None else None) for p in s]
        charts.append(_chart("Users", "count", [("users", users)]))
    return charts


def _server_line(series: list[SeriesPoint], name: str, scale: float = 1.0) -> list[tuple[float, float | None]]:
    out: list[tuple[float, float | None]] = []
    for p in series:
        value = None if p.server is None else p.server.get(name)
        out.append((float(p.t_s), None if value is None else value * scale))
    return out


def _server_charts(outcome: RunOutcome) -> list[str]:
    """Where the server saturates, per second from its own /metrics; none when it was not scraped."""
    s = outcome.series
    if not any(p.server is not None for p in s):
        return []
    return [
        _server_chart("Server queue", "requests", [("waiting", _server_line(s, "requests_waiting")),
                                                   ("running", _server_line(s, "requests_running"))]),
        _server_chart("Server KV-cache usage", "%", [("used", _server_line(s, "kv_cache_usage_ratio", 100.0))]),
        _server_chart("TTFT p95: server vs client", "ms", [("server", _server_line(s, "server_ttft_ms_p95")),
                                                           ("client", _line(s, "ttft_p95_ms"))]),
        _server_chart("Server prefix-cache hit rate", "%",
                      [("hits", _server_line(s, "prefix_cache_hit_ratio", 100.0))]),
        _server_chart("Server tokens", "per second", [("prompt", _server_line(s, "prompt_tokens_per_s")),
                                                      ("generated", _server_line(s, "generation_tokens_per_s"))]),
    ]  # fmt: skip


def _server_chart(title: str, unit: str, series: Sequence[_Series]) -> str:
    # A fact the server does not expose (llama.cpp has no KV-cache gauge) is said so, not drawn empty.
    server = series[0][1]
    if all(y is None for _, y in server):
        return f"<p class=muted>{_esc(title)}: not exposed by the server</p>"
    return _chart(title, unit, series)


def _server_section(summary: dict[str, Any]) -> list[str]:
    source, rows = server_rows(summary)
    if not source:
        return []
    parts = ["<h2>Server (its own /metrics)</h2>", f"<p class=muted>{_esc(source)}</p>"]
    if rows:
        parts.append(_table(["metric", "value"], [[_esc(name), _esc(server_fmt(name, v))] for name, v in rows]))
    return parts


def _workload_section(summary: dict[str, Any]) -> list[str]:
    """Where the prompts came from, their token lengths, and TTFT by session turn; nothing for an older run."""
    parts = [f"<p>{_esc(line)}</p>" for line in report.workload_lines(summary)]
    for name, stats in report.lengths(summary).items():
        bins = report.length_bins(stats)
        labels = [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi, _ in bins]
        parts.append(f"<p>{_esc(report.length_text(name, stats))}</p>")
        parts.append(report.bar_chart(f"{name.capitalize()} length", "requests", labels,
                                      [("requests", [float(c) for _, _, c in bins])]))  # fmt: skip
    turns = report.turn_rows(summary)
    if turns:
        labels = [str(r["turn"]) for r in turns]
        series = [(f"p{p}", [r.get(f"ttft_p{p}_ms") for r in turns]) for p in (50, 95)]
        parts.append(report.bar_chart("TTFT by session turn", "ms", labels, series))
        rows = [[str(r["turn"]), _fmt("requests", r.get("requests")),
                 *(_fmt("ms", r.get(f"ttft_p{p}_ms")) for p in (50, 95, 99))] for r in turns]  # fmt: skip
        parts.append(_table(["turn", "requests", "TTFT p50 ms", "TTFT p95 ms", "TTFT p99 ms"], rows))
    return ["<h2>Workload</h2>", *parts] if parts else []


def _trust_section(outcome: RunOutcome) -> list[str]:
    """The generator's own error: the refusal, the bounds on TTFT/ITL error, read lag per second, CPU."""
    trust = report.trust(outcome.summary)
    s = outcome.series
    lag = [("read lag p99", _line(s, "read_lag_p99_ms")), ("TTFT error p99", _line(s, "ttft_err_p99_ms"))]
    drawn = any(y is not None for _, pts in lag for _, y in pts)
    if trust.empty and not drawn:
        return []
    parts = ["<h2>How far to trust these numbers</h2>"]
    if trust.refusal:
        parts.append(f"<p class=refusal>{_esc(trust.refusal)}</p>")
    parts += [f"<p>{_esc(report.bound_text(label, values))}</p>" for label, values in trust.bounds]
    parts += [f"<p class=muted>{_esc(note)}</p>" for note in trust.notes]
    if drawn:
        parts.append(_chart("Generator read lag and TTFT error bound", "ms", lag))
    if trust.processes:
        rows = [[_esc(name), _esc(role), "-" if cpu is None else f"{cpu:,.2f}",
                 "-" if busy is None else f"{100 * busy:.1f}%"]
                for name, role, cpu, busy in trust.processes]  # fmt: skip
        parts.append(_table(["generator process", "role", "CPU s", "of one core"], rows))
    return parts


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _mark(passed: bool) -> str:
    return '<span class="pass">pass</span>' if passed else '<span class="fail">FAIL</span>'


def render_html(outcome: RunOutcome) -> str:
    """The whole report as one HTML string."""
    summary, params = outcome.summary, outcome.params
    endpoints: dict[str, dict[str, Any]] = summary.get("endpoints", {})
    metrics: dict[str, Any] = summary["metrics"]
    verdict = outcome.verdict or "no SLO"
    parts = [
        "<!doctype html><html lang=en><meta charset=utf-8>",
        f"<title>llm-monitor load run {outcome.run_id}</title><style>{_CSS}</style><body>",
        f"<h1>Load run {outcome.run_id}: {_esc(outcome.status)} ({_esc(verdict)})</h1>",
        f"<p class=muted>{_esc(outcome.started_at.isoformat(timespec='seconds'))} to "
        f"{_esc(outcome.ended_at.isoformat(timespec='seconds'))}; target {_esc(params.get('target'))}, "
        f"{_esc(params.get('load_model'))} loop, endpoint {_esc(params.get('endpoint'))}, "
        f"{_esc(_load_text(params))}, max_tokens {_esc(params.get('max_tokens'))}</p>",
    ]
    if outcome.abort_reason:
        parts.append(f"<p class=fail>aborted: {_esc(outcome.abort_reason)}</p>")
    refused = report.trust(summary).refusal
    if refused:
        parts.append(f"<p class=refusal>{_esc(refused)}</p>")
    hidden = hidden_metrics(summary)
    rows = [[_esc(name), _fmt(name, value), *(_fmt(name, ep.get(name)) for ep in endpoints.values())]
            for name, value in metrics.items() if name not in hidden]  # fmt: skip
    parts += ["<h2>Summary</h2>", _table(["metric", "all", *endpoints], rows)]
    goodput = report.goodput_text(summary, params)
    if goodput:
        parts.append(f"<p><b>{_esc(goodput)}</b></p>")
    parts += [f"<p class=muted>{_esc(note)}</p>" for note in (*reasoning_notes(summary), *quality_cost_notes(summary))]
    if outcome.slo:
        slo_rows = [[_esc(r.objective), _fmt(r.objective.metric, r.value), _mark(r.passed)] for r in outcome.slo]
        parts += ["<h2>SLO</h2>", _table(["objective", "measured", "result"], slo_rows)]
    sweep = summary.get("sweep")
    if sweep is not None:
        latency = ["ttft_p95_ms"] if "ttfa_p95_ms" in hidden else ["ttft_p95_ms", "ttfa_p95_ms"]
        headers = [f"{name[:4].upper()} p95 ms" for name in latency]
        if any(st["metrics"].get("quality_rate") is not None for st in sweep["steps"]):
            latency, headers = [*latency, "quality_rate"], [*headers, "golden pass"]  # pass rate per step
        if any(st["metrics"].get("goodput_rate") is not None for st in sweep["steps"]):
            latency, headers = [*latency, "goodput_rate", "goodput_rps"], [*headers, "goodput", "good req/s"]
        knee = report.knee_index(sweep)
        step_rows = [[f"{st['rate']:g}" + (" (knee)" if i == knee else ""), _fmt("rps", st["metrics"].get("rps")),
                      *(_fmt(n, st["metrics"].get(n)) for n in latency), "yes" if st["kept_up"] else "no",
                      _mark(st["passed"]) if report.step_mark(st) else "-"]
                     for i, st in enumerate(sweep["steps"])]  # fmt: skip
        best = sweep.get("goodput_rps")
        best_text = f"{best:g} req/s" if best is not None else "none"
        parts += [
            "<h2>Sweep</h2>",
            f"<p>Highest sustainable rate (goodput): <b>{_esc(best_text)}</b></p>",
            *([f"<p>Knee: <b>{sweep['steps'][knee]['rate']:g} req/s offered</b></p>"] if knee is not None else []),
            *([f"<p>{_esc(text)}</p>"] if (text := report.saturation_text(sweep)) else []),
            _table(["offered req/s", "finished req/s", *headers, "kept up", "SLO"], step_rows),
        ]
    parts += _workload_section(summary)
    parts += _trust_section(outcome)
    parts += _server_section(summary)
    canary = summary.get("canary") or {}
    if canary.get("count"):
        parts.append(
            f"<h2>Canaries under load</h2><p>{canary['ok']}/{canary['count']} ok; TTFT p95 "
            f"{_fmt('ttft_p95_ms', canary.get('ttft_p95_ms'))} ms</p>"
        )
    errors = summary.get("errors") or {}
    if errors:
        samples = summary.get("error_samples") or {}
        err_rows = [[_esc(kind), f"{count:,}", "<br>".join(map(_esc, samples.get(kind) or [""]))]
                    for kind, count in errors.items()]  # fmt: skip
        parts += ["<h2>Errors</h2>", _table(["kind", "count", "examples"], err_rows)]
    if outcome.baseline is not None and outcome.baseline.summary:
        reg = regressions(outcome.baseline.summary.get("metrics", {}), metrics)
        hidden &= hidden_metrics(outcome.baseline.summary)
        reg_rows = [[_esc(r["metric"]), _fmt(r["metric"], r["baseline"]), _fmt(r["metric"], r["current"]),
                     "-" if r["change"] is None else f"{100 * r['change']:+.1f}%", _esc(r["judgement"])]
                    for r in reg if r["metric"] in REGRESSION_METRICS and r["metric"] not in hidden]  # fmt: skip
        parts += [f"<h2>Against baseline run {outcome.baseline.id}</h2>",
                  _table(["metric", "baseline", "this run", "change", ""], reg_rows)]  # fmt: skip
    parts += ["<h2>Over time</h2>", *_charts(outcome), *_server_charts(outcome), "</body></html>"]
    return "\n".join(parts)


def _load_text(params: dict[str, Any]) -> str:
    if params.get("load_model") == "open":
        return f"rate {params.get('rate')} req/s ({params.get('arrival')})"
    return f"{params.get('users')} users"
