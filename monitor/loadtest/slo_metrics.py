"""Load-test metrics by name, computed from a merged ``Window``: the vocabulary of SLOs and reports.

Names carry their unit: ``ttft_p95_ms``, ``ttfa_p95_ms``, ``itl_p50_ms``, ``e2e_p99_ms`` (any
percentile, also ``_mean_ms``), ``lag_p95_ms`` (the open-loop generator's own send lag),
``wait_p95_ms`` (how long open-loop arrivals waited for a free ``--max-inflight`` slot), ``error_rate``
and ``truncation_rate`` (fractions), ``rps`` (finished requests per second), ``tokens_per_s``
(output tokens per second, reasoning included), ``reasoning_tokens_per_s``, ``requests``,
``failures``, ``quality_rate`` (the share of replies to prompts with a golden answer that matched it;
None without golden answers). ``cost``, ``cost_per_1k_requests`` and ``cost_per_correct`` (per
golden answer passed) need the target's price (``monitor.loadtest.cost``). ``canary_ok_rate`` and
``canary_ttft_p95_ms`` come from the canary probes that ran
during the load, when there were any.

``SERVER_METRICS`` come from the server's own /metrics, scraped every second of the run
(``monitor.loadtest.server_values``): ``server_queue_max``, ``server_kv_cache_usage_max`` and
``server_preemptions`` say where the server saturates; None when it does not expose them.

TTFT is the first token of any kind, TTFA the first answer token (see ``monitor.meter``); for a
model that does not reason they are the same sample. ``reasoning_tokens_per_s`` is None (not
measured) when no reply carried reasoning, so a plain model never shows a made-up 0.

``goodput_rate`` and ``goodput_rps`` are the share and the rate of requests that met every
per-request ``--goodput`` clause (None without clauses). The generator's own timing error:
``read_lag_pNN_ms`` (kernel receive to the generator's stamp, per read), ``ttft_err_pNN_ms`` and
``itl_err_pNN_ms`` (the bound on each request's TTFT error, on each gap's ITL error).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from monitor.loadtest.window import KEYS_PER_MS, Window, encode_hist, hist_mean, hist_percentile

__all__ = [
    "COST_METRICS",
    "METRIC_HELP",
    "SERVER_METRICS",
    "SUMMARY_METRICS",
    "is_metric",
    "metric_value",
    "length_summary",
    "reasoning_summary",
    "summarize",
    "turn_summary",
]

_LATENCY = re.compile(
    r"^(ttft|ttfa|itl|e2e|lag|wait|read_lag|ttft_err|itl_err)_(?:p(\d{1,2}(?:\.\d+)?|100)|(mean))_ms$"
)
_PLAIN = frozenset(
    {"error_rate", "truncation_rate", "rps", "tokens_per_s", "reasoning_tokens_per_s", "requests", "failures",
     "quality_rate", "goodput_rate", "goodput_rps"}
)  # fmt: skip
# Fractions of the window: (hits, denominator) counters.
_RATIOS = {
    "error_rate": ("failures", "requests"),
    "truncation_rate": ("truncated", "finished"),
    "quality_rate": ("golden_passed", "golden_graded"),
    "goodput_rate": ("good", "goodput_judged"),
}
# Counts per second of the span.
_PER_SECOND = {"rps": "requests", "tokens_per_s": "output_tokens", "goodput_rps": "good"}
# From the token counts and the target's price, given to metric_value as `extra` (None without a price).
COST_METRICS = frozenset({"cost", "cost_per_1k_requests", "cost_per_correct"})
CANARY_METRICS = frozenset({"canary_ok_rate", "canary_ttft_p95_ms"})
# From the server's /metrics over the run (see server_values.py for how each is summed up).
SERVER_METRICS = (
    "server_queue_max", "server_running_max", "server_kv_cache_usage_max", "server_preemptions",
    "server_prefix_cache_hit_rate", "server_prompt_tokens_per_s", "server_generation_tokens_per_s",
    "server_ttft_mean_ms", "server_ttft_p95_ms", "server_itl_p95_ms", "server_e2e_p95_ms", "server_queue_time_p95_ms",
)  # fmt: skip
METRIC_HELP = (
    "ttft_p95_ms, ttfa_p95_ms, itl_p95_ms, e2e_p99_ms (any pNN or mean), lag_p95_ms, wait_p95_ms, error_rate, "
    "truncation_rate, rps, tokens_per_s, reasoning_tokens_per_s, requests, failures, quality_rate, "
    "goodput_rate, goodput_rps, read_lag_p99_ms, ttft_err_p99_ms, itl_err_p99_ms, "
    "cost, cost_per_1k_requests, cost_per_correct, canary_ok_rate, canary_ttft_p95_ms, " + ", ".join(SERVER_METRICS)
)
# What summaries, the database and the regression table carry (SLOs may ask for any other name).
SUMMARY_METRICS = (
    "requests", "failures", "error_rate", "truncation_rate", "rps", "tokens_per_s", "reasoning_tokens_per_s",
    "ttft_p50_ms", "ttft_p90_ms", "ttft_p95_ms", "ttft_p99_ms",
    "ttfa_p50_ms", "ttfa_p90_ms", "ttfa_p95_ms", "ttfa_p99_ms",
    "itl_p50_ms", "itl_p90_ms", "itl_p95_ms", "itl_p99_ms",
    "e2e_p50_ms", "e2e_p95_ms", "e2e_p99_ms", "quality_rate", "goodput_rate", "goodput_rps",
    "lag_p95_ms", "lag_p99_ms", "wait_p95_ms", "read_lag_p50_ms", "read_lag_p99_ms", "ttft_err_p99_ms",
    "itl_err_p99_ms",
)  # fmt: skip


def is_metric(name: str) -> bool:
    return (
        name in _PLAIN or name in CANARY_METRICS or name in SERVER_METRICS or name in COST_METRICS
        or _LATENCY.match(name) is not None
    )  # fmt: skip


def metric_value(
    name: str, window: Window, duration_s: float, extra: Mapping[str, float | None] | None = None
) -> float | None:
    """The value of metric ``name`` over ``window`` (None when nothing was measured)."""
    if extra is not None and name in extra:
        return extra[name]
    match = _LATENCY.match(name)
    if match is not None:
        kind, pct, mean = match.groups()
        hist = getattr(window, kind)
        return hist_mean(hist) if mean else hist_percentile(hist, float(pct))
    if name == "requests":
        return float(window.requests)
    if name == "failures":
        return float(window.failures)
    if name in _RATIOS:
        hits, total = (getattr(window, field) for field in _RATIOS[name])
        return hits / total if total else None
    if name == "reasoning_tokens_per_s":
        if duration_s <= 0 or not (window.reasoned or window.reasoning_tokens):
            return None
        return window.reasoning_tokens / duration_s
    if name in _PER_SECOND:
        if duration_s <= 0 or (name == "goodput_rps" and not window.goodput_judged):
            return None
        return float(getattr(window, _PER_SECOND[name])) / duration_s
    if name in CANARY_METRICS or name in SERVER_METRICS or name in COST_METRICS:
        return None
    raise KeyError(name)


def summarize(window: Window, duration_s: float) -> dict[str, float | None]:
    """The standard metric set (``SUMMARY_METRICS``), rounded for storage and display."""
    out: dict[str, float | None] = {}
    for name in SUMMARY_METRICS:
        value = metric_value(name, window, duration_s)
        out[name] = None if value is None else round(value, 6 if name.endswith("_rate") else 3)
    return out


def reasoning_summary(window: Window) -> dict[str, int | bool]:
    """How the replies split into reasoning and answer; ``split`` is False for a model that did not reason."""
    return {
        "split": window.reasoned > 0,
        "replies": window.reasoned,  # successful replies that carried reasoning
        "tokens": window.reasoning_tokens,
        "estimated": window.reasoning_estimated,  # of those replies, the ones whose count the server did not send
        "answerless": window.answerless,  # a first token but no answer: not in the TTFA percentiles
    }


def _tokens_percentile(hist: Mapping[int, int], pct: float) -> float | None:
    value = hist_percentile(hist, pct)  # keys are tokens here, not 10 µs steps
    return None if value is None else round(value * KEYS_PER_MS, 1)


def length_summary(window: Window) -> dict[str, dict[str, object]]:
    """Prompt and output token counts of the successful requests: percentiles and the histogram."""
    out: dict[str, dict[str, object]] = {}
    for name, hist in (("input", window.in_len), ("output", window.out_len)):
        out[name] = {
            "requests": sum(hist.values()),
            "mean": None if not hist else round((hist_mean(hist) or 0.0) * KEYS_PER_MS, 1),
            **{f"p{p}": _tokens_percentile(hist, p) for p in (5, 50, 95, 99)},
            "hist": encode_hist(hist),
        }
    return out


def turn_summary(window: Window) -> list[dict[str, float | int | None]]:
    """TTFT by session turn (1 is a conversation's first request); empty without sessions."""
    rows: list[dict[str, float | int | None]] = []
    for turn, hist in sorted(window.turn_ttft.items()):
        rows.append({
            "turn": turn, "requests": sum(hist.values()),
            **{f"ttft_p{p}_ms": hist_percentile(hist, p) for p in (50, 95, 99)},
        })  # fmt: skip
    return rows
