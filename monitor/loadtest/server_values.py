"""A load run's scrapes of the server's own /metrics, per second and summed up over a span. Pure.

`ServerSeconds` holds what the runner's per-second scrape saw: each second's `ServerInterval` (the
row stored in `server_metrics`, and `SeriesPoint.server`) and the cumulative `ServerSample` behind
it. Over a span (the whole run, a sweep step) gauges are the maximum of the seconds (queue depth and
KV-cache usage saturate in bursts), while counters and histograms are the difference between the
span's first and last samples, so a run's server TTFT p95 is one `histogram_quantile` over every
request the server finished in it, not a mean of per-second estimates.

The metric names (`server_queue_max`, ...) are `slo_metrics.SERVER_METRICS`, the SLO vocabulary.
The server's counters count all of its traffic, not only this run's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from monitor.loadtest.slo_metrics import SERVER_METRICS
from monitor.server_metrics import ServerInterval, ServerSample, interval

__all__ = ["ServerSeconds", "second_of"]

# metric -> the ServerInterval field and how a span sums it up ("max" over seconds, else the span's interval).
_FROM: dict[str, tuple[str, str]] = {
    "server_queue_max": ("requests_waiting", "max"),
    "server_running_max": ("requests_running", "max"),
    "server_kv_cache_usage_max": ("kv_cache_usage_ratio", "max"),
    "server_preemptions": ("preemptions", "span"),
    "server_prefix_cache_hit_rate": ("prefix_cache_hit_ratio", "span"),
    "server_prompt_tokens_per_s": ("prompt_tokens_per_s", "span"),
    "server_generation_tokens_per_s": ("generation_tokens_per_s", "span"),
    "server_ttft_mean_ms": ("server_ttft_ms_mean", "span"),
    "server_ttft_p95_ms": ("server_ttft_ms_p95", "span"),
    "server_itl_p95_ms": ("server_itl_ms_p95", "span"),
    "server_e2e_p95_ms": ("server_e2e_ms_p95", "span"),
    "server_queue_time_p95_ms": ("server_queue_ms_p95", "span"),
}
assert tuple(_FROM) == SERVER_METRICS, "slo_metrics.SERVER_METRICS and _FROM list the same names"


def second_of(at: datetime) -> int:
    """The epoch second a scrape at `at` describes.

    Scrapes are taken just after each whole second, so the interval ending at `at` is (almost all
    of) the second before: the one whose requests the client-side series counts.
    """
    return math.floor(at.timestamp() - 0.5)


@dataclass
class ServerSeconds:
    """The per-second scrapes of one run, keyed by epoch second."""

    intervals: dict[int, ServerInterval] = field(default_factory=dict)
    samples: dict[int, tuple[float, ServerSample]] = field(default_factory=dict)  # (scraped at, epoch s; sample)

    def add(self, at: datetime, sample: ServerSample, values: ServerInterval) -> None:
        second = second_of(at)
        self.intervals[second] = values
        self.samples[second] = (at.timestamp(), sample)

    def point(self, second: int) -> dict[str, float | None] | None:
        """That second's values by `FIELDS` name, or None when it was not scraped."""
        values = self.intervals.get(second)
        return None if values is None else values.to_json()

    def values(self, start_s: float | None = None, end_s: float | None = None) -> dict[str, float | None]:
        """Every `SERVER_METRICS` value over the seconds in [start_s, end_s) (None: not exposed or not scraped)."""
        seconds = sorted(s for s in self.samples if (start_s is None or s >= start_s) and (end_s is None or s < end_s))
        out: dict[str, float | None] = dict.fromkeys(SERVER_METRICS)
        if not seconds:
            return out
        span: ServerInterval | None = None
        if len(seconds) > 1:
            (first_at, first), (last_at, last) = self.samples[seconds[0]], self.samples[seconds[-1]]
            span = interval(first, last, last_at - first_at)
        for name, (column, how) in _FROM.items():
            if how == "max":
                present = [v for s in seconds if (v := getattr(self.intervals[s], column)) is not None]
                out[name] = max(present) if present else None
            elif span is not None:
                out[name] = getattr(span, column)
        return out
