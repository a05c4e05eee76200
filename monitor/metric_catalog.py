"""The metric catalogue: every metric a rule, a trend or a page can name, one row each.

Ground floor: it imports nothing of `monitor`, so the config can check a rule's `metric` against
it, and the rollups, the trend reader, the alert window sources, the API and the dashboard all
take their columns and definitions from here instead of keeping their own maps.

Two kinds of metric, by what one stored result contributes:

- a **distribution** is one value per *answered* result (one without `error_kind`), read from the
  `probe_results` column `column`. The rollups keep a mergeable histogram of it under the metric's
  name in `probe_rollups.metrics`, so quantiles, mean, min and max come from any span of buckets.
- a **rate** is hits over the results it `over`s (every result, or the answered ones). A result
  is a hit when its `column` is set (`error_kind`, `truncated`), or, for a rate `per_check`, when
  the rule's named check is listed in it. The rollups count hits in the column `count`.

A third kind, **server**, is not read from probe results: it is one value per scrape of the
probe's target's own /metrics (`targets[].metrics`), read from the `server_metrics` column
`column` (`monitor.server_metrics.FIELDS`). Rules over them aggregate the window's scrapes.
They are in `SERVER_METRICS`, not `METRICS` (which lists what a probe result contributes).

Adding a metric is one row here plus its column: the `probe_results` column (and its migration)
for a distribution; for a rate also the `probe_rollups` count column named in `count`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DISTRIBUTIONS",
    "METRICS",
    "METRIC_NAMES",
    "RATES",
    "RATE_COUNTS",
    "SERVER_METRICS",
    "SERVER_METRIC_NAMES",
    "Kind",
    "MetricDef",
    "Over",
    "metric",
]

Kind = Literal["distribution", "rate", "server"]
Over = Literal["results", "answered"]


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One metric: its name in rules and JSON, how it is counted, where it is stored, and what it means."""

    name: str
    kind: Kind
    unit: str  # ms, tokens, ratio
    column: str  # the probe_results column one result contributes
    meaning: str
    over: Over = "answered"  # rates: their denominator
    count: str = ""  # rates: the probe_rollups column (and `Bucket.counts` key) counting hits
    per_check: bool = False  # rates: hits counted per check name (rules name the check)

    def __post_init__(self) -> None:
        # A rate without a count column could not be rolled up; a distribution's histogram needs none.
        if (self.kind == "rate") != bool(self.count):
            raise ValueError(f"metric {self.name}: a rate needs a count column, a distribution has none")


METRICS: tuple[MetricDef, ...] = (
    MetricDef("latency_ms", "distribution", "ms", "latency_ms", "end-to-end latency"),
    MetricDef("ttft_ms", "distribution", "ms", "ttft_ms", "time to first token (streaming only)"),
    MetricDef("itl_ms", "distribution", "ms", "itl_ms_mean", "the request's mean inter-token latency"),
    MetricDef(
        "completion_tokens", "distribution", "tokens", "completion_tokens",
        "completion tokens (server usage, else estimated)",
    ),
    MetricDef("ttfa_ms", "distribution", "ms", "ttfa_ms", "time to the first answer (content) token (streaming only)"),
    MetricDef(
        "reasoning_tokens", "distribution", "tokens", "reasoning_tokens",
        "reasoning tokens (server usage details, else estimated)",
    ),
    # expect.golden: a pass is 1 and a failure 0, so the mean (rules' default agg) is the pass rate over
    # the graded answers; ungraded ones (no golden answer, the embeddings call failed) add nothing.
    MetricDef(
        "quality_rate", "distribution", "ratio", "golden_passed",
        "share of golden answers that passed (mean over graded answers)",
    ),
    MetricDef(
        "golden_similarity", "distribution", "ratio", "golden_similarity",
        "similarity of the reply to the golden answer",
    ),
    MetricDef(
        "cost", "distribution", "currency", "cost", "cost of one request (targets[].price, from its token counts)",
    ),
    MetricDef(
        "error_rate", "rate", "ratio", "error_kind", "share of requests that failed (error_kind set)",
        over="results", count="errors",
    ),
    MetricDef(
        "truncation_rate", "rate", "ratio", "truncated", "share of answers cut short (finish_reason length)",
        count="truncated",
    ),
    MetricDef(
        "check_failure_rate", "rate", "ratio", "failed_checks", "share of answers where the named check failed",
        count="check_failures", per_check=True,
    ),
)  # fmt: skip

# The server's own view, one value per scrape (`server_metrics` columns, monitor.server_metrics.FIELDS).
SERVER_METRICS: tuple[MetricDef, ...] = (
    MetricDef("server_requests_waiting", "server", "requests", "requests_waiting", "requests queued on the server"),
    MetricDef("server_requests_running", "server", "requests", "requests_running", "requests in the running batch"),
    MetricDef(
        "server_kv_cache_usage_ratio", "server", "ratio", "kv_cache_usage_ratio", "share of the KV cache in use",
    ),
    MetricDef("server_preemptions", "server", "preemptions", "preemptions", "requests preempted since the last scrape"),
    MetricDef(
        "server_prefix_cache_hit_ratio", "server", "ratio", "prefix_cache_hit_ratio",
        "prefix-cache hits over queries since the last scrape",
    ),
    MetricDef("server_prompt_tokens_per_s", "server", "tokens/s", "prompt_tokens_per_s", "prefill throughput"),
    MetricDef(
        "server_generation_tokens_per_s", "server", "tokens/s", "generation_tokens_per_s", "decode throughput",
    ),
    MetricDef("server_ttft_ms_mean", "server", "ms", "server_ttft_ms_mean", "the server's mean time to first token"),
    MetricDef(
        "server_ttft_ms_p95", "server", "ms", "server_ttft_ms_p95",
        "the server's p95 time to first token (estimated from its histogram buckets)",
    ),
    MetricDef("server_itl_ms_mean", "server", "ms", "server_itl_ms_mean", "the server's mean inter-token latency"),
    MetricDef(
        "server_itl_ms_p95", "server", "ms", "server_itl_ms_p95", "the server's p95 inter-token latency (estimated)",
    ),
    MetricDef(
        "server_e2e_ms_p95", "server", "ms", "server_e2e_ms_p95", "the server's p95 request latency (estimated)",
    ),
    MetricDef(
        "server_queue_ms_p95", "server", "ms", "server_queue_ms_p95", "the server's p95 time queued (estimated)",
    ),
)  # fmt: skip

_BY_NAME: Mapping[str, MetricDef] = {m.name: m for m in (*METRICS, *SERVER_METRICS)}
METRIC_NAMES: tuple[str, ...] = tuple(_BY_NAME)
DISTRIBUTIONS: tuple[str, ...] = tuple(m.name for m in METRICS if m.kind == "distribution")
RATES: frozenset[str] = frozenset(m.name for m in METRICS if m.kind == "rate")
# The plain count columns of probe_rollups, one per rate not counted per check: ("errors", "truncated").
RATE_COUNTS: tuple[str, ...] = tuple(m.count for m in METRICS if m.count and not m.per_check)
SERVER_METRIC_NAMES: frozenset[str] = frozenset(m.name for m in SERVER_METRICS)


def metric(name: str) -> MetricDef:
    """The catalogue row of `name`; ValueError for a name it does not list."""
    found = _BY_NAME.get(name)
    if found is None:
        raise ValueError(f"unknown metric {name!r}")
    return found
