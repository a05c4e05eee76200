"""Server-rendered SVG charts: line charts with axes, ticks and alert bands, and sparklines.

No chart library and no script: the page works offline and under a strict CSP. Colours come
from CSS classes (`s0`..`s4` for series, `firing`/`resolved` for markers), so the stylesheet
decides the palette and dark mode. Time ticks carry `data-ts` (epoch seconds) so the browser can
relabel them in the viewer's time zone; the server writes UTC labels as the fallback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.dashboard.fmt import fmt_duration_s, fmt_value
from monitor.dashboard.markup import Markup, el

__all__ = ["Marker", "Series", "line_chart", "nice_ticks", "sparkline", "time_ticks"]

# Plot geometry in viewBox units; the SVG scales to its container's width.
WIDTH = 560
HEIGHT = 210
PAD_LEFT = 56
PAD_RIGHT = 14
PAD_TOP = 12
PAD_BOTTOM = 26
# Draw a dot per point up to this many points (more would only clutter the line).
MAX_DOTS = 60
_TIME_STEPS_S = (
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    2 * 3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    7 * 86400,
)
_ELAPSED_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
Scale = Callable[[float], float]


@dataclass(frozen=True, slots=True)
class Series:
    """One line: `points` are (x, y) with x in epoch seconds (or elapsed seconds); y None is a gap."""

    name: str
    points: Sequence[tuple[float, float | None]]
    style: int = 0
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Marker:
    """An alert on the time axis: a band from `start` to `end` (None: still active) and a line at `start`."""

    start: float
    end: float | None
    label: str
    kind: str = "firing"


def nice_ticks(high: float, count: int = 4) -> list[float]:
    """0 and round steps (1, 2, 2.5, 5 x 10^k) up to at least `high`."""
    if not high > 0 or not math.isfinite(high):
        return [0.0, 1.0]
    raw = high / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    ticks = [0.0]
    while ticks[-1] < high - 1e-9 * step:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def time_ticks(x_min: float, x_max: float, max_ticks: int, elapsed: bool = False) -> list[float]:
    """Round instants (or elapsed offsets) between x_min and x_max, at most `max_ticks` of them."""
    span = max(x_max - x_min, 1.0)
    steps = _ELAPSED_STEPS_S if elapsed else _TIME_STEPS_S
    step = next((s for s in steps if span / s <= max_ticks), steps[-1] * math.ceil(span / steps[-1] / max_ticks))
    first = math.ceil(x_min / step) * step
    return [float(t) for t in range(int(first), int(x_max) + 1, int(step))]


def _x_label(x: float, span: float, elapsed: bool) -> Markup:
    if elapsed:
        return Markup(fmt_duration_s(x))
    when = datetime.fromtimestamp(x, UTC)
    return Markup(when.strftime("%H:%M" if span <= 36 * 3600 else "%b %d"))


def _path(points: Sequence[tuple[float, float, float]], gap_x: float | None) -> str:
    """SVG path data through (px, py) points; a jump of more than `gap_x` in data x starts a new segment."""
    parts: list[str] = []
    previous: float | None = None
    for px, py, x in points:
        move = previous is None or (gap_x is not None and x - previous > gap_x)
        parts.append(f"{'M' if move else 'L'}{px:.1f} {py:.1f}")
        previous = x
    return " ".join(parts)


def line_chart(
    series: Sequence[Series],
    *,
    x_min: float,
    x_max: float,
    unit: str,
    label: str,
    markers: Sequence[Marker] = (),
    elapsed: bool = False,
    gap_x: float | None = None,
    y_max: float | None = None,
) -> Markup:
    """An SVG line chart. `gap_x`: a jump in x larger than this breaks the line (missing data).

    `unit` is passed to `fmt_value` for axis labels and point titles (`ms`, `%`, `/s`, ...).
    """
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    x_max = max(x_max, x_min + 1.0)
    values = [y for s in series for _, y in s.points if y is not None and math.isfinite(y)]
    top = max(values, default=0.0) * 1.05 or 1.0
    if y_max is not None:
        # Rates: never past 100 %, and a flat 0 % line still gets a readable axis.
        top = min(max(top, y_max * 0.05), y_max)
    y_ticks = nice_ticks(top)
    y_top = y_ticks[-1]

    def sx(x: float) -> float:
        return PAD_LEFT + (x - x_min) / (x_max - x_min) * plot_w

    def sy(y: float) -> float:
        return PAD_TOP + plot_h - y / y_top * plot_h

    parts: list[Markup] = []
    for tick in y_ticks:
        y = sy(tick)
        parts.append(
            el("line", {"class": "grid", "x1": PAD_LEFT, "x2": WIDTH - PAD_RIGHT, "y1": f"{y:.1f}", "y2": f"{y:.1f}"})
        )
        parts.append(
            el(
                "text",
                {"class": "yt", "x": PAD_LEFT - 6, "y": f"{y + 4:.1f}", "text-anchor": "end"},
                fmt_value(tick, unit),
            )
        )
    span = x_max - x_min
    for tick in time_ticks(x_min, x_max, max(2, plot_w // 80), elapsed):
        x = sx(tick)
        attrs: dict[str, object] = {"class": "xt", "x": f"{x:.1f}", "y": HEIGHT - 8, "text-anchor": "middle"}
        if not elapsed:
            attrs.update({"data-ts": int(tick), "data-span": int(span)})
        parts.append(
            el(
                "line",
                {
                    "class": "tick",
                    "x1": f"{x:.1f}",
                    "x2": f"{x:.1f}",
                    "y1": PAD_TOP + plot_h,
                    "y2": PAD_TOP + plot_h + 4,
                },
            )
        )
        parts.append(el("text", attrs, _x_label(tick, span, elapsed)))
    parts.append(
        el(
            "line",
            {"class": "axis", "x1": PAD_LEFT, "x2": WIDTH - PAD_RIGHT, "y1": PAD_TOP + plot_h, "y2": PAD_TOP + plot_h},
        )
    )
    parts.extend(_markers(markers, x_min, x_max, sx, plot_h))
    # The first series is drawn last, so it stays visible where lines overlap.
    for s in reversed(series):
        parts.append(_series(s, sx, sy, gap_x, unit, elapsed))
    if not values:
        middle = {"class": "empty", "x": PAD_LEFT + plot_w / 2, "y": PAD_TOP + plot_h / 2, "text-anchor": "middle"}
        parts.append(el("text", middle, "No data in this window"))
    return el(
        "svg",
        {
            "class": "chart",
            "viewBox": f"0 0 {WIDTH} {HEIGHT}",
            "role": "img",
            "aria-label": label,
            "preserveAspectRatio": "xMidYMid meet",
            "xmlns": "http://www.w3.org/2000/svg",
        },
        el("title", None, label),
        parts,
    )


def _markers(markers: Sequence[Marker], x_min: float, x_max: float, scale: Scale, plot_h: float) -> list[Markup]:
    out: list[Markup] = []
    for marker in markers:
        end = x_max if marker.end is None else marker.end
        if end < x_min or marker.start > x_max:
            continue
        x0, x1 = scale(max(marker.start, x_min)), scale(min(end, x_max))
        title = el("title", None, marker.label)
        out.append(
            el(
                "rect",
                {
                    "class": f"band {marker.kind}",
                    "x": f"{x0:.1f}",
                    "y": PAD_TOP,
                    "width": f"{max(x1 - x0, 1.5):.1f}",
                    "height": f"{plot_h:.1f}",
                },
                title,
            )
        )
        if marker.start >= x_min:
            out.append(
                el(
                    "line",
                    {
                        "class": f"mark {marker.kind}",
                        "x1": f"{x0:.1f}",
                        "x2": f"{x0:.1f}",
                        "y1": PAD_TOP,
                        "y2": PAD_TOP + plot_h,
                    },
                    title,
                )
            )
            out.append(el("path", {"class": f"flag {marker.kind}", "d": f"M{x0:.1f} {PAD_TOP} l6 0 l-6 7 z"}, title))
    return out


def _series(s: Series, sx: Scale, sy: Scale, gap_x: float | None, unit: str, elapsed: bool) -> Markup:
    pts = [(sx(x), sy(y), x, y) for x, y in s.points if y is not None and math.isfinite(y)]
    klass = f"series s{s.style % 5}" + (" dashed" if s.dashed else "")
    path = el("path", {"class": klass, "d": _path([(p[0], p[1], p[2]) for p in pts], gap_x)})
    dots: list[Markup] = []
    if len(pts) <= MAX_DOTS and not s.dashed:
        for px, py, x, y in pts:
            when = fmt_duration_s(x) if elapsed else datetime.fromtimestamp(x, UTC).strftime("%Y-%m-%d %H:%M UTC")
            attrs: dict[str, object] = {"class": f"dot s{s.style % 5}", "cx": f"{px:.1f}", "cy": f"{py:.1f}", "r": 2.5}
            if not elapsed:
                attrs["data-ts"] = int(x)
            dots.append(el("circle", attrs, el("title", None, f"{s.name}: {fmt_value(y, unit)} at {when}")))
    return el("g", {"class": "line", "data-series": s.name}, path, dots)


def sparkline(values: Sequence[float | None], *, label: str, width: int = 120, height: int = 30) -> Markup:
    """A small trend line of evenly spaced values (None: no data at that step)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    attrs = {
        "class": "spark",
        "viewBox": f"0 0 {width} {height}",
        "role": "img",
        "aria-label": label,
        "preserveAspectRatio": "none",
        "xmlns": "http://www.w3.org/2000/svg",
    }
    if not finite:
        return el(
            "svg",
            attrs,
            el("title", None, label),
            el("line", {"class": "spark-empty", "x1": 0, "x2": width, "y1": height - 2, "y2": height - 2}),
        )
    high = max(finite)
    low = min(finite)
    rng = (high - low) or max(high, 1.0)
    step = width / max(len(values) - 1, 1)
    points: list[tuple[float, float, float]] = []
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            continue
        y = 2 + (height - 4) * (1 - (v - low) / rng) if high != low else height / 2
        points.append((i * step, y, float(i)))
    # Connected across empty steps: a sparkline is a glance at the trend, not a record of gaps.
    d = _path(points, None)
    last_x, last_y, _ = points[-1]
    return el(
        "svg",
        attrs,
        el("title", None, label),
        el("path", {"class": "spark-line", "d": d}),
        el("circle", {"class": "spark-dot", "cx": f"{last_x:.1f}", "cy": f"{last_y:.1f}", "r": 2}),
    )
