"""A server's Prometheus exposition, read into one `ServerSample` whatever the server calls things. Pure.

vLLM, SGLang, llama.cpp's server and TGI expose the same few facts under different names, and
rename them between releases (vLLM's `gpu_cache_usage_perc` became `kv_cache_usage_perc`). `FACTS`
maps each fact we keep to the names it goes by, first match wins; `ServerSample.sources` says which
name each value came from, so a report can show what was read and a missing fact stays None
instead of becoming 0. Series of one name with several label sets (one per engine or model) are
summed: one target is one server.

Parsing is prometheus_client's reference text parser, sample by sample (the family a sample
lands in depends on its `# TYPE` line, which servers write inconsistently for counters).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["FACTS", "HISTOGRAMS", "Cumulative", "ExpositionError", "ServerSample", "parse_exposition"]

Kind = Literal["gauge", "counter"]


class ExpositionError(ValueError):
    """The body is not Prometheus text exposition (the message names the cause, one line)."""


# fact -> (kind, names in order of preference). Counters are matched with and without `_total`.
FACTS: dict[str, tuple[Kind, tuple[str, ...]]] = {
    "requests_waiting": (
        "gauge", ("vllm:num_requests_waiting", "sglang:num_queue_reqs", "llamacpp:requests_deferred", "tgi_queue_size"),
    ),
    "requests_running": (
        "gauge",
        ("vllm:num_requests_running", "sglang:num_running_reqs", "llamacpp:requests_processing",
         "tgi_batch_current_size"),
    ),
    # A ratio in [0, 1] everywhere, despite vLLM's `_perc` suffix.
    "kv_cache_usage": (
        "gauge",
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage",
         "llamacpp:kv_cache_usage_ratio"),
    ),
    "preemptions": ("counter", ("vllm:num_preemptions", "vllm:num_preemptions_total")),
    "prefix_cache_queries": ("counter", ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries")),
    "prefix_cache_hits": ("counter", ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits")),
    # SGLang reports the hit rate itself, as a gauge.
    "prefix_cache_hit_rate": ("gauge", ("sglang:cache_hit_rate",)),
    "prompt_tokens": ("counter", ("vllm:prompt_tokens", "sglang:prompt_tokens", "llamacpp:prompt_tokens")),
    "generation_tokens": (
        "counter", ("vllm:generation_tokens", "sglang:generation_tokens", "llamacpp:tokens_predicted"),
    ),
    "requests_finished": ("counter", ("vllm:request_success", "sglang:num_requests", "tgi_request_success")),
}  # fmt: skip

# histogram fact -> names (seconds everywhere). The server's own view of what the probes measure.
HISTOGRAMS: dict[str, tuple[str, ...]] = {
    "ttft_s": ("vllm:time_to_first_token_seconds", "sglang:time_to_first_token_seconds"),
    "itl_s": (
        "vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds",
        "sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds",
    ),
    "e2e_s": ("vllm:e2e_request_latency_seconds", "sglang:e2e_request_latency_seconds"),
    "queue_s": ("vllm:request_queue_time_seconds", "sglang:queue_time_seconds"),
}  # fmt: skip

_WANTED: frozenset[str] = frozenset(
    {name for _, names in FACTS.values() for name in names}
    | {name + "_total" for _, names in FACTS.values() for name in names}
    | {name + suffix for names in HISTOGRAMS.values() for name in names for suffix in ("_bucket", "_sum", "_count")}
)


@dataclass(frozen=True, slots=True)
class Cumulative:
    """One histogram as exposed: cumulative bucket counts by upper bound (+Inf last), sum and count."""

    buckets: tuple[tuple[float, float], ...]  # (le, cumulative count), ascending le
    sum: float
    count: float


@dataclass(frozen=True, slots=True)
class ServerSample:
    """The facts one scrape found; None where the server exposes no such metric."""

    values: Mapping[str, float | None]
    histograms: Mapping[str, Cumulative | None]
    sources: Mapping[str, str] = field(default_factory=dict)  # fact -> the metric name it was read from

    def value(self, fact: str) -> float | None:
        return self.values.get(fact)


def parse_exposition(text: str) -> ServerSample:
    """Read the facts from Prometheus text exposition; ExpositionError if it does not parse."""
    series, buckets = _read(text)
    values: dict[str, float | None] = {}
    sources: dict[str, str] = {}
    for fact, (kind, names) in FACTS.items():
        values[fact] = None
        spellings = [s for name in names for s in ((name, name + "_total") if kind == "counter" else (name,))]
        found = next((s for s in spellings if s in series), None)
        if found is not None:
            values[fact] = series[found]
            sources[fact] = found
    histograms: dict[str, Cumulative | None] = {}
    for fact, names in HISTOGRAMS.items():
        name = next((n for n in names if n in buckets and n + "_count" in series), None)
        histograms[fact] = None
        if name is not None:
            ordered = tuple(sorted(buckets[name].items()))
            histograms[fact] = Cumulative(ordered, series.get(name + "_sum", 0.0), series[name + "_count"])
            sources[fact] = name
    return ServerSample(values, histograms, sources)


def _read(text: str) -> tuple[dict[str, float], dict[str, dict[float, float]]]:
    """The wanted samples, summed over label sets: plain series by name, bucket counts by histogram and le."""
    series: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name = sample.name
                if name not in _WANTED:
                    continue
                if name.endswith("_bucket"):
                    le = _le(sample.labels.get("le"))
                    if le is not None:
                        per_le = buckets.setdefault(name[: -len("_bucket")], {})
                        per_le[le] = per_le.get(le, 0.0) + sample.value
                elif math.isfinite(sample.value):
                    series[name] = series.get(name, 0.0) + sample.value
    except (ValueError, TypeError, IndexError) as exc:
        raise ExpositionError(f"not Prometheus text exposition: {exc}"[:200]) from None
    return series, buckets


def _le(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        le = float(text)
    except ValueError:
        return None
    return None if math.isnan(le) else le
