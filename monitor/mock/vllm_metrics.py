"""A small, hand-rendered subset of vLLM 0.32's Prometheus metrics (§4.2, §9).

prometheus_client is only a test dependency, so the exposition text is written by hand; the
tests parse it back with `prometheus_client.parser`.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Histogram", "MockMetrics"]

# Bucket bounds copied from vllm/v1/metrics/loggers.py (~0.10.1).
TTFT_BUCKETS_S = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS_S = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
E2E_BUCKETS_S = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
FINISH_REASONS = ("stop", "length", "abort")


@dataclass(slots=True)
class Histogram:
    bounds: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_many(self, value: float, times: int) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.total += value * times

    def lines(self, name: str, model: str) -> list[str]:
        out = []
        cumulative = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            cumulative += count
            out.append(f"{name}_bucket{_labels(model, le=str(bound))} {float(cumulative)!r}")
        cumulative += self.counts[-1]
        out.append(f"{name}_bucket{_labels(model, le='+Inf')} {float(cumulative)!r}")
        out.append(f"{name}_count{_labels(model)} {float(cumulative)!r}")
        out.append(f"{name}_sum{_labels(model)} {self.total!r}")
        return out


@dataclass(slots=True)
class MockMetrics:
    """Counters the request handlers update; `render()` produces the exposition text."""

    running: int = 0
    inflight_tokens: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    success: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISH_REASONS, 0))
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS_S))
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS_S))
    e2e: Histogram = field(default_factory=lambda: Histogram(E2E_BUCKETS_S))

    def finish(self, finish_reasons: Sequence[str], prompt_tokens: int, generation_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.generation_tokens += generation_tokens
        for reason in finish_reasons:
            self.success[reason] = self.success.get(reason, 0) + 1

    def render(self, model: str, max_model_len: int, waiting: int = 0) -> str:
        # A toy KV-cache estimate: in-flight tokens over a pool of four full contexts.
        kv_usage = min(1.0, self.inflight_tokens / (4 * max_model_len))
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[str]) -> None:
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples])

        def gauge(name: str, help_text: str, value: float) -> None:
            family(name, "gauge", help_text, [f"{name}{_labels(model)} {float(value)!r}"])

        gauge("vllm:num_requests_running", "Number of requests in model execution batches.", self.running)
        gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", waiting)
        gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", kv_usage)
        # prometheus_client's text format names counter families with their _total suffix.
        for name, help_text, value in (
            ("vllm:prompt_tokens_total", "Number of prefill tokens processed.", self.prompt_tokens),
            ("vllm:generation_tokens_total", "Number of generation tokens processed.", self.generation_tokens),
        ):
            family(name, "counter", help_text, [f"{name}{_labels(model)} {float(value)!r}"])
        success = [
            f"vllm:request_success_total{_labels(model, finished_reason=reason)} {float(count)!r}"
            for reason, count in self.success.items()
        ]
        family("vllm:request_success_total", "counter", "Count of successfully processed requests.", success)
        for name, help_text, histogram in (
            ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", self.ttft),
            # vLLM 0.32 has only inter_token_latency (time_per_output_token went in 0.13, §4.2, §9).
            ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", self.itl),
            ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", self.e2e),
        ):
            family(name, "histogram", help_text, histogram.lines(name, model))
        return "\n".join(lines) + "\n"


def _labels(model: str, **extra: str) -> str:
    """Label set in the sorted order prometheus_client writes: engine, [finished_reason, le], model_name."""
    labels = {"engine": "0", "model_name": model, **extra}
    return "{" + ",".join(f'{key}="{_escape(labels[key])}"' for key in sorted(labels)) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
