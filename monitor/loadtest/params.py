"""``LoadParams``: one validated description of a load test, built by the CLI, used by the runner.

Validation errors are ``ConfigError`` with the offending flag first, so the CLI prints one line
and exits 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from monitor.config import ProbeSettings, TargetSettings
from monitor.errors import ConfigError
from monitor.loadtest.goodput import RequestClause, format_goodput
from monitor.loadtest.shapes import Stage, build_shape, format_stages, sweep_stages, total_duration_s
from monitor.loadtest.slo import Objective
from monitor.loadtest.workload import WorkloadSpec

__all__ = ["Arrival", "EndpointChoice", "LoadParams", "Sweep", "locust_stages"]

EndpointChoice = Literal["chat", "completion", "both"]
Arrival = Literal["constant", "poisson"]


@dataclass(frozen=True, slots=True)
class Sweep:
    """Open-loop rates ``start, start+step, ...`` held for ``step_s`` each, until the SLO breaks."""

    start: float
    step: float
    steps: int
    step_s: float
    warmup_s: float

    def stages(self) -> tuple[Stage, ...]:
        return sweep_stages(self.start, self.step, self.steps, self.step_s)


@dataclass(frozen=True, slots=True)
class LoadParams:
    target: TargetSettings
    api_key_env: str | None  # the variable the Locust processes read the key from (never the key)
    endpoint: EndpointChoice = "both"
    users: int | None = None
    rate: float | None = None
    arrival: Arrival = "poisson"
    spawn_rate: float | None = None
    duration_s: float = 60.0
    shape: str | None = None
    sweep: Sweep | None = None
    objectives: tuple[Objective, ...] = ()
    workers: int = 0
    remote_workers: int = 0
    master_bind: tuple[str, int] | None = None
    max_tokens: int = 128
    prompts: Path | None = None
    stream: bool = True
    continuous_usage: bool = True
    max_inflight: int = 512
    timeout_s: float = 60.0
    extra_body: str | None = None
    csv_prefix: str | None = None
    canaries: tuple[ProbeSettings, ...] = ()
    canary_interval_s: float = 10.0
    baseline_id: int | None = None
    server_metrics: bool = True  # scrape the target's own /metrics every second (--no-server-metrics)
    goodput: tuple[RequestClause, ...] = ()  # per-request clauses (--goodput)
    workload: WorkloadSpec | None = None  # lengths, sessions, shared prefixes, trace (None: the prompts as they are)

    def __post_init__(self) -> None:
        if self.users is not None and self.rate is not None:
            raise ConfigError("--users and --rate are two load models; give one (closed loop: --users, open: --rate)")
        if self.users is not None and self.users < 1:
            raise ConfigError("--users: must be >= 1")
        if self.rate is not None and self.rate <= 0:
            raise ConfigError("--rate: must be > 0 requests per second")
        if self.sweep is not None and self.shape is not None:
            raise ConfigError("--sweep and --shape cannot be combined (a sweep is its own step shape)")
        if self.sweep is not None and self.users is not None:
            raise ConfigError("--sweep steps the arrival rate; use --rate (the first step), not --users")
        if self.duration_s <= 0:
            raise ConfigError("--duration: must be positive")
        if self.workers < 0 or self.remote_workers < 0:
            raise ConfigError("--workers: must be >= 0")
        if self.max_tokens < 1:
            raise ConfigError("--max-tokens: must be >= 1")
        if self.max_inflight < 1:
            raise ConfigError("--max-inflight: must be >= 1")
        if not self.stream and any(c.metric in ("ttft_ms", "ttfa_ms", "tpot_ms") for c in self.goodput):
            raise ConfigError("--goodput: ttft/ttfa/tpot are not measured with --no-stream (use e2e_ms)")

    @property
    def replay(self) -> bool:
        """A trace replay: open loop on the trace's own clock."""
        return self.workload is not None and self.workload.trace is not None

    @property
    def open_loop(self) -> bool:
        return self.rate is not None or self.sweep is not None or self.replay

    @property
    def distributed(self) -> bool:
        return self.workers > 0 or self.remote_workers > 0

    @property
    def stages(self) -> tuple[Stage, ...] | None:
        """Stages of levels (users, or rates in open loop); None for a constant load."""
        if self.sweep is not None:
            return self.sweep.stages()
        if self.shape is None:
            return None
        peak = self.rate if self.rate is not None else float(self.users or 1)
        return build_shape(self.shape, peak, self.duration_s)

    @property
    def run_s(self) -> float:
        workload = self.workload
        if workload is not None and workload.trace is not None and workload.trace_span_s is not None:
            # The trace on its own (scaled) clock, cut at --duration if that is shorter.
            return min(self.duration_s, workload.trace_span_s / workload.trace_speedup)
        stages = self.stages
        return total_duration_s(stages) if stages is not None else self.duration_s

    @property
    def users_or_schedulers(self) -> int:
        if self.open_loop:
            # One arrival scheduler per worker process (or one in a single process).
            return max(1, self.workers + self.remote_workers)
        return self.users or 1

    @property
    def inflight_cap(self) -> int | None:
        """Open loop: the most requests all schedulers keep in flight (each its own --max-inflight)."""
        return self.max_inflight * self.users_or_schedulers if self.open_loop else None

    def to_json(self) -> dict[str, Any]:
        """What is stored with the run (no credentials: only the variable name is kept)."""
        stages = self.stages
        return {
            "target": self.target.name,
            "endpoint": self.endpoint,
            "model": self.target.model,
            "load_model": "open" if self.open_loop else "closed",
            "users": self.users,
            "rate": self.rate,
            "arrival": self.arrival if self.open_loop else None,
            "spawn_rate": self.spawn_rate,
            "duration_s": self.run_s,
            "shape": self.shape,
            "stages": format_stages(stages) if stages is not None else None,
            "sweep": None if self.sweep is None else {
                "start": self.sweep.start, "step": self.sweep.step, "steps": self.sweep.steps,
                "step_s": self.sweep.step_s,
            },
            "slo": ",".join(str(o) for o in self.objectives) or None,
            "workers": self.workers,
            "remote_workers": self.remote_workers,
            "max_tokens": self.max_tokens,
            "prompts": str(self.prompts) if self.prompts is not None else None,
            "stream": self.stream,
            "continuous_usage": self.continuous_usage,
            "max_inflight": self.max_inflight if self.open_loop else None,
            "canaries": [p.name for p in self.canaries],
            "server_metrics": self.server_metrics,
            "goodput": format_goodput(self.goodput) or None,
            "workload": self.workload.to_json() if self.workload is not None else None,
        }  # fmt: skip


def locust_stages(params: LoadParams) -> str | None:
    stages = params.stages
    return format_stages(stages) if stages is not None else None
