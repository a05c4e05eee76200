"""What happened on the server between two scrapes: `ServerInterval`, from two `ServerSample`s. Pure.

Gauges are read as of the later scrape. Counters and histograms are cumulative, so an interval
is their difference; a counter that went down means the server restarted (Prometheus' counter
reset rule): the later value is then the whole interval. Quantiles come from the histogram
buckets' differences, interpolated linearly inside the bucket as Prometheus' `histogram_quantile`
does, so they are estimates bounded by the server's bucket edges; the mean (sum/count) is exact.

`FIELDS` is the one list of stored per-interval values (the table's columns,
the metric catalogue's rows, the load report's columns), each with its unit in its name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from monitor.server_metrics.parse import Cumulative, ServerSample

__all__ = ["FIELDS", "ServerInterval", "histogram_quantile", "interval"]


@dataclass(frozen=True, slots=True)
class ServerInterval:
    """Per-interval server facts; None where the server exposes no such metric (or nothing happened)."""

    requests_waiting: float | None = None
    requests_running: float | None = None
    kv_cache_usage_ratio: float | None = None
    preemptions: float | None = None  # during the interval
    prefix_cache_hit_ratio: float | None = None  # hits / queries during the interval (SGLang: its own gauge)
    prompt_tokens_per_s: float | None = None
    generation_tokens_per_s: float | None = None
    server_ttft_ms_mean: float | None = None
    server_ttft_ms_p95: float | None = None
    server_itl_ms_mean: float | None = None
    server_itl_ms_p95: float | None = None
    server_e2e_ms_p95: float | None = None
    server_queue_ms_p95: float | None = None

    def to_json(self) -> dict[str, float | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ServerInterval))


def interval(prev: ServerSample | None, cur: ServerSample, elapsed_s: float) -> ServerInterval:
    """The interval ending at `cur`; with no `prev` (the first scrape) only the gauges are known."""
    ttft = _delta_histogram(prev, cur, "ttft_s")
    itl = _delta_histogram(prev, cur, "itl_s")
    e2e = _delta_histogram(prev, cur, "e2e_s")
    queue = _delta_histogram(prev, cur, "queue_s")
    hit_ratio = cur.value("prefix_cache_hit_rate")
    queries = _delta(prev, cur, "prefix_cache_queries")
    hits = _delta(prev, cur, "prefix_cache_hits")
    if queries is not None and hits is not None and queries > 0:
        hit_ratio = min(1.0, hits / queries)
    return ServerInterval(
        requests_waiting=cur.value("requests_waiting"),
        requests_running=cur.value("requests_running"),
        kv_cache_usage_ratio=cur.value("kv_cache_usage"),
        preemptions=_delta(prev, cur, "preemptions"),
        prefix_cache_hit_ratio=hit_ratio,
        prompt_tokens_per_s=_rate(_delta(prev, cur, "prompt_tokens"), elapsed_s),
        generation_tokens_per_s=_rate(_delta(prev, cur, "generation_tokens"), elapsed_s),
        server_ttft_ms_mean=_ms(_mean(ttft)),
        server_ttft_ms_p95=_ms(histogram_quantile(0.95, ttft)),
        server_itl_ms_mean=_ms(_mean(itl)),
        server_itl_ms_p95=_ms(histogram_quantile(0.95, itl)),
        server_e2e_ms_p95=_ms(histogram_quantile(0.95, e2e)),
        server_queue_ms_p95=_ms(histogram_quantile(0.95, queue)),
    )


def _delta(prev: ServerSample | None, cur: ServerSample, fact: str) -> float | None:
    now = cur.value(fact)
    before = prev.value(fact) if prev is not None else None
    if now is None or before is None:
        return None
    return now if now < before else now - before  # a reset: the server restarted


def _rate(delta: float | None, elapsed_s: float) -> float | None:
    return None if delta is None or elapsed_s <= 0 else delta / elapsed_s


def _delta_histogram(prev: ServerSample | None, cur: ServerSample, fact: str) -> Cumulative | None:
    now = cur.histograms.get(fact)
    before = prev.histograms.get(fact) if prev is not None else None
    if now is None or before is None:
        return None
    if now.count < before.count or {le for le, _ in now.buckets} != {le for le, _ in before.buckets}:
        return now if now.count < before.count else None  # a reset, or the buckets were redefined
    old = dict(before.buckets)
    return Cumulative(
        tuple((le, max(0.0, count - old[le])) for le, count in now.buckets),
        now.sum - before.sum,
        now.count - before.count,
    )


def _mean(h: Cumulative | None) -> float | None:
    return None if h is None or h.count <= 0 else h.sum / h.count


def histogram_quantile(q: float, h: Cumulative | None) -> float | None:
    """Prometheus' histogram_quantile over one (differenced) histogram; None without observations."""
    if h is None or h.count <= 0 or not h.buckets:
        return None
    rank = q * h.buckets[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in h.buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_le  # the top finite bound, as Prometheus answers
            if count == lower_count:
                return le
            return lower_le + (le - lower_le) * (rank - lower_count) / (count - lower_count)
        lower_le, lower_count = le, count
    return lower_le


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0
