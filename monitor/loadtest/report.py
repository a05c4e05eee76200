"""What the printed report, the HTML report and the dashboard say about a run's workload and its trust.

One reading of the summary keys added for workloads, goodput and the generator's own error
(``turns``, ``lengths``, ``workload``, ``generator``, ``sweep.knee``, ``sweep.saturated_at``), shared by
``monitor.loadtest.summary``, ``monitor.loadtest.html`` and the dashboard's load-run page. Every
reader is defensive: a run stored before these keys existed has none of them, and each function
then returns nothing, so the section is left out instead of drawn empty.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LENGTH_BINS", "BarSeries", "Trust", "bar_chart", "bound_text", "goodput_text", "knee_index", "length_bins",
    "length_text", "lengths", "nice_top", "saturation_text", "step_mark", "tick", "trust", "turn_rows",
    "workload_lines",
]  # fmt: skip

# A length histogram is drawn in about this many bars, whatever the spread of its token counts.
LENGTH_BINS = 24
# Bar colours (the HTML report's palette; the dashboard's first two series colours match).
BAR_COLOURS = ("#2563eb", "#f59e0b", "#8b5cf6", "#14b8a6")
# One bar per label of a series: (name, values); None draws no bar.
BarSeries = tuple[str, Sequence[float | None]]
_BAR_W, _BAR_H, _PAD_L, _PAD_R, _PAD_T, _PAD_B = 560, 210, 56, 14, 24, 34


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def turn_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """TTFT by session turn, the rows with a turn number (an older run, or one without sessions: [])."""
    rows = summary.get("turns")
    if not isinstance(rows, list):
        return []
    return [r for r in rows if isinstance(r, dict) and _num(r.get("turn")) is not None]


def lengths(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Input and output token-count statistics that counted at least one request ({} when none did)."""
    found = summary.get("lengths")
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(v, dict) and (_num(v.get("requests")) or 0) > 0}


def length_bins(stats: dict[str, Any], bins: int = LENGTH_BINS) -> list[tuple[int, int, int]]:
    """The histogram ``[[tokens, count], ...]`` as at most ``bins`` bars ``(low, high, count)`` of equal width."""
    pairs = [(int(k), int(c)) for k, c in stats.get("hist") or () if c]
    if not pairs:
        return []
    low, high = min(k for k, _ in pairs), max(k for k, _ in pairs)
    width = max(1, -(-(high - low + 1) // bins))  # ceiling: every bar the same width, the last may be partial
    counts: dict[int, int] = {}
    for key, count in pairs:
        index = (key - low) // width
        counts[index] = counts.get(index, 0) + count
    last = (high - low) // width
    return [(low + i * width, min(low + (i + 1) * width - 1, high), counts.get(i, 0)) for i in range(last + 1)]


def length_text(name: str, stats: dict[str, Any]) -> str:
    """``input tokens: mean 19, p5 4, p50 17, p95 36, p99 36 (72 requests)``."""
    cells = [f"{p} {_tokens(stats.get(p))}" for p in ("mean", "p5", "p50", "p95", "p99")]
    return f"{name} tokens: {', '.join(cells)} ({int(stats.get('requests') or 0):,} requests)"


def _tokens(value: Any) -> str:
    number = _num(value)
    return "-" if number is None else f"{number:,.0f}"


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items() if v is not None)
    if isinstance(value, list | tuple):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


# Workload keys shown, in this order, each as "label: value".
_WORKLOAD_KEYS = (
    ("kind", "workload"), ("requests_planned", "requests planned"), ("input_tokens", "input tokens asked"),
    ("output_tokens", "output tokens asked"), ("ignore_eos", "ignore_eos"), ("eos", "end of sequence"),
    ("sessions", "sessions"), ("prefixes", "shared prefixes"), ("trace", "trace"),
)  # fmt: skip


def workload_lines(summary: dict[str, Any]) -> list[str]:
    """The workload as text: its shape, where token counts came from, replies without usage, its warnings."""
    workload = summary.get("workload")
    lines: list[str] = []
    if isinstance(workload, dict):
        for key, label in _WORKLOAD_KEYS:
            if workload.get(key) not in (None, "", [], {}):
                lines.append(f"{label}: {_value(workload[key])}")
        source = workload.get("token_source")
        if source:
            lines.append(f"prompt token counts from: {_value(source)}")
        lines += [f"warning: {w}" for w in workload.get("warnings") or () if w]
    estimated = int(_num(summary.get("tokens_estimated")) or 0)
    if estimated:
        lines.append(f"{estimated:,} replies sent no usage: their output tokens were estimated from the text")
    return lines


def goodput_text(summary: dict[str, Any], params: dict[str, Any]) -> str | None:
    """``goodput 97.50% of requests met ttft_ms<=500 (23.8 good req/s)``, or None without ``--goodput``."""
    metrics = summary.get("metrics") or {}
    rate, rps = _num(metrics.get("goodput_rate")), _num(metrics.get("goodput_rps"))
    if rate is None and rps is None:
        return None
    shown = "-" if rate is None else f"{100 * rate:.2f}%"
    per_s = "" if rps is None else f" ({rps:,.1f} good req/s)"
    clause = params.get("goodput")
    return f"goodput: {shown} of requests met {clause or 'every --goodput clause'}{per_s}"


def knee_index(sweep: dict[str, Any]) -> int | None:
    """The sweep step at the knee: ``knee`` as a step dict/index (``{"index": i}``, ``{"rate": r}``) or a rate."""
    knee = sweep.get("knee")
    steps = sweep.get("steps") or []
    if isinstance(knee, dict):
        if isinstance(knee.get("index"), int):
            return knee["index"] if 0 <= knee["index"] < len(steps) else None
        knee = knee.get("rate")
    rate = _num(knee)
    if rate is None:
        return None
    return next((i for i, st in enumerate(steps) if _num(st.get("rate")) == rate), None)


def saturation_text(sweep: dict[str, Any]) -> str | None:
    """Where the sweep stopped because the server saturated, and why, or that it kept up with every step;
    None for a sweep stored before saturation was judged."""
    if "saturated_at" not in sweep:
        return None
    at = sweep["saturated_at"]
    if not isinstance(at, dict) or _num(at.get("rate")) is None:
        return "the server kept up with every step"
    knee = knee_index(sweep)
    below = f"knee {sweep['steps'][knee]['rate']:g} req/s; " if knee is not None else "below the first rate; "
    return f"saturated at {at['rate']:g} req/s offered ({below}{at.get('detail') or at.get('kind') or '?'})"


def step_mark(step: dict[str, Any]) -> str | None:
    """A sweep step's SLO mark: "pass" or "fail"; None for a step judged without an SLO."""
    if not step.get("slo"):
        return None
    return "pass" if step.get("passed") else "fail"


@dataclass(frozen=True, slots=True)
class Trust:
    """How far to trust the run's numbers: the refusal, the bounds on timing error, CPU per process."""

    refusal: str | None
    bounds: list[tuple[str, dict[str, float | None]]]  # (what, {"p50":, "p99":, "max":}) in ms
    processes: list[tuple[str, str, float | None, float | None]]  # (name, role, cpu_s, cpu_fraction)
    notes: list[str]

    @property
    def empty(self) -> bool:
        return self.refusal is None and not self.bounds and not self.processes and not self.notes


# Generator keys holding {"p50", "p99", "max"} in ms, with what they bound.
_BOUNDS = (
    ("ttft_error_bound_ms", "TTFT error bound"), ("itl_error_bound_ms", "ITL error bound"),
    ("read_lag_ms", "read lag"), ("loop_lag_ms", "event-loop lag"), ("send_lag_ms", "send lag"),
)  # fmt: skip
# Whole-run metrics standing in for a bound the generator report does not carry (p99 only).
_BOUND_METRICS = {"ttft_error_bound_ms": "ttft_err_p99_ms", "itl_error_bound_ms": "itl_err_p99_ms",
                  "read_lag_ms": "read_lag_p99_ms"}  # fmt: skip


def trust(summary: dict[str, Any]) -> Trust:
    """The generator's self-measured error (``summary["generator"]``), read key by key."""
    generator = summary.get("generator")
    generator = generator if isinstance(generator, dict) else {}
    metrics = summary.get("metrics") or {}
    bounds: list[tuple[str, dict[str, float | None]]] = []
    for key, label in _BOUNDS:
        found = generator.get(key)
        if isinstance(found, dict):
            values = {p: _num(found.get(p)) for p in ("p50", "p99", "max")}
        elif key in _BOUND_METRICS and _num(metrics.get(_BOUND_METRICS[key])) is not None:
            values = {"p50": None, "p99": _num(metrics[_BOUND_METRICS[key]]), "max": None}
        else:
            continue
        if any(v is not None for v in values.values()):
            bounds.append((label, values))
    processes = [
        (str(p.get("name") or "?"), str(p.get("role") or ""), _num(p.get("cpu_s")), _num(p.get("cpu_fraction")))
        for p in generator.get("processes") or ()
        if isinstance(p, dict)
    ]
    if not processes and _num(generator.get("cpu_s")) is not None:
        processes.append(("locust", "master", _num(generator["cpu_s"]), _num(generator.get("cpu_fraction"))))
        if _num(generator.get("worker_cpu_s")) is not None:
            processes.append(("workers", "worker (mean)", _num(generator["worker_cpu_s"]),
                              _num(generator.get("worker_cpu_fraction"))))  # fmt: skip
    notes: list[str] = []
    kernel = generator.get("kernel_timestamps")
    share = _num(kernel)
    if share is not None:
        # The share of socket reads the kernel timestamped; the rest are stamped when the loop got to them.
        notes.append(f"kernel receive timestamps on {100 * share:.1f}% of reads")
    elif kernel is not None:
        notes.append(f"kernel receive timestamps: {_value(kernel)}")
    slots = generator.get("slot_wait")
    if isinstance(slots, dict) and _num(slots.get("waited")):
        # Not the generator's error: the client-side queue in front of a server slower than the arrivals.
        wait = slots.get("wait_ms")
        p99 = _num(wait.get("p99")) if isinstance(wait, dict) else None
        unsent = _num(slots.get("unsent")) or 0
        notes.append(
            f"{_value(slots.get('waited'))} of {_value(slots.get('arrivals'))} arrivals found every slot of "
            f"--max-inflight {_value(slots.get('max_inflight'))} taken and waited (wait p99 "
            f"{'-' if p99 is None else f'{p99:,.0f}'} ms"
            + (f"; {unsent:.0f} still waiting at the end, never sent" if unsent else "")
            + "); latencies include the wait"
        )
    if generator.get("saturated") and not generator.get("refusal"):
        notes.append("the load generator used ~100% of a CPU core: it may be the bottleneck (add --workers)")
    refusal = generator.get("refusal")
    return Trust(refusal=str(refusal) if refusal else None, bounds=bounds, processes=processes, notes=notes)


def bound_text(label: str, values: dict[str, float | None]) -> str:
    """``TTFT error bound: p50 0.1 ms, p99 0.8 ms, max 3.2 ms``."""
    cells = [f"{p} {'-' if v is None else f'{v:,.2f} ms'}" for p, v in values.items() if v is not None]
    return f"{label}: {', '.join(cells)}"


def bar_chart(title: str, unit: str, labels: Sequence[str], series: Sequence[BarSeries]) -> str:
    """An SVG bar chart, one group of bars per label, one bar per series; shared by the HTML report and dashboard.

    Labels are thinned to about twelve so they never overlap; each bar carries a ``<title>`` with its value.
    """
    values = [v for _, vs in series for v in vs if v is not None]
    esc = html.escape
    if not labels or not values:
        return f'<p class="muted">{esc(title)}: no data</p>'
    top = nice_top(max(values))
    plot_w, plot_h = _BAR_W - _PAD_L - _PAD_R, _BAR_H - _PAD_T - _PAD_B
    group_w = plot_w / len(labels)
    bar_w = max(group_w * 0.8 / len(series), 0.5)
    parts = [f'<svg class="chart bars" width="{_BAR_W}" height="{_BAR_H}" viewBox="0 0 {_BAR_W} {_BAR_H}" role="img" '
             f'aria-label="{esc(title)}"><title>{esc(title)}</title>']  # fmt: skip
    for i in range(5):
        y = _PAD_T + plot_h - plot_h * i / 4
        parts.append(f'<line class="grid" x1="{_PAD_L}" x2="{_BAR_W - _PAD_R}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#e5e7eb"/><text class="yt" x="{_PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{tick(top * i / 4)}</text>")  # fmt: skip
    every = max(1, -(-len(labels) // 12))
    for g, label in enumerate(labels):
        x0 = _PAD_L + g * group_w + group_w * 0.1
        for s, (name, vs) in enumerate(series):
            value = vs[g] if g < len(vs) else None
            if value is None:
                continue
            h = plot_h * value / top
            colour = BAR_COLOURS[s % len(BAR_COLOURS)]
            parts.append(f'<rect class="bar b{s}" x="{x0 + s * bar_w:.1f}" y="{_PAD_T + plot_h - h:.1f}" '
                         f'width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}"><title>{esc(name)} {esc(label)}: '
                         f"{tick(value)} {esc(unit)}</title></rect>")  # fmt: skip
        if g % every == 0:
            x = _PAD_L + (g + 0.5) * group_w
            parts.append(f'<text class="xt" x="{x:.1f}" y="{_BAR_H - 18}" text-anchor="middle">{esc(label)}</text>')
    legend = " · ".join(f'<tspan fill="{BAR_COLOURS[s % len(BAR_COLOURS)]}">{esc(name)}</tspan>'
                        for s, (name, _) in enumerate(series))  # fmt: skip
    parts.append(f'<text x="{_PAD_L}" y="14" font-weight="600">{esc(title)} ({esc(unit)})  {legend}</text>')
    parts.append("</svg>")
    return "".join(parts)


def nice_top(value: float) -> float:
    """A round axis top at or above `value` (1, 1.2, 1.5, 2, 2.5, ... x 10^k)."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** (len(str(int(value))) - 1)
    return next(m * magnitude for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * magnitude >= value)


def tick(value: float) -> str:
    """An axis label: whole numbers from 100 up, three significant digits below."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
