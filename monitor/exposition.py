"""Prometheus text exposition (format 0.0.4), built by hand: the daemon's `/metrics`.

Counters and histograms live in memory and start from zero with the process, as Prometheus
expects (`rate()` handles resets). Values are in base units: seconds, not milliseconds. Label
sets are bounded by the config (probe, target, check names), never by request data.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Literal, Protocol, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from monitor import __version__
from monitor.errors import StoreError
from monitor.results import ProbeResult

__all__ = [
    "CONTENT_TYPE",
    "CounterFamily",
    "GaugeFamily",
    "HistogramFamily",
    "ProbeMetrics",
    "ScrapeQueries",
    "alert_families",
    "escape_label_value",
    "format_value",
    "leadership_families",
    "writer_families",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Labels = tuple[str, ...]
MetricType = Literal["counter", "gauge", "histogram"]

# Bucket bounds in seconds, chosen for LLM serving: TTFT tens of ms to tens of s, ITL ms, whole replies to minutes.
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ITL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
LATENESS_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
LOOP_LAG_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Always exported, 0 when there are none, so that an alert on them sees a series.
ALERT_STATES = ("pending", "firing")
# /metrics reads the outbox depth (and, on a follower, the alert states) from the database; a hung
# database must not hang the scrape (the same bound as /readyz).
METRICS_DB_TIMEOUT_S = 2.0


def escape_label_value(value: str) -> str:
    """Backslash, double quote and newline escaped, as the exposition format requires."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


class _Family:
    kind: MetricType

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(label_names)

    def header(self) -> Iterator[str]:
        yield f"# HELP {self.name} {_escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.kind}"

    def render(self) -> Iterator[str]:
        yield from self.header()
        yield from self.samples()

    def samples(self) -> Iterator[str]:
        raise NotImplementedError


class CounterFamily(_Family):
    kind: MetricType = "counter"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        super().__init__(name, help_text, label_names)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def samples(self) -> Iterator[str]:
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_label_text(self.label_names, labels)} {format_value(value)}"


class GaugeFamily(_Family):
    kind: MetricType = "gauge"

    def __init__(
        self, name: str, help_text: str, label_names: Sequence[str] = (), values: Mapping[Labels, float] | None = None
    ) -> None:
        super().__init__(name, help_text, label_names)
        self.values: dict[Labels, float] = dict(values or {})

    def set(self, labels: Labels = (), value: float = 0.0) -> None:
        self.values[labels] = value

    def samples(self) -> Iterator[str]:
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_label_text(self.label_names, labels)} {format_value(value)}"


class _Series:
    __slots__ = ("count", "counts", "sum")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)  # the last slot is +Inf
        self.sum = 0.0
        self.count = 0


class HistogramFamily(_Family):
    kind: MetricType = "histogram"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str], buckets: Sequence[float]) -> None:
        super().__init__(name, help_text, label_names)
        self.bounds = tuple(sorted(buckets))
        self.series: dict[Labels, _Series] = {}

    def observe(self, labels: Labels, value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = _Series(len(self.bounds))
        # le is inclusive: a value equal to a bound belongs to that bucket.
        series.counts[bisect_left(self.bounds, value)] += 1
        series.sum += value
        series.count += 1

    def samples(self) -> Iterator[str]:
        names = (*self.label_names, "le")
        for labels, series in sorted(self.series.items()):
            cumulative = 0
            for bound, count in zip((*self.bounds, math.inf), series.counts, strict=True):
                cumulative += count
                yield f"{self.name}_bucket{_label_text(names, (*labels, format_value(bound)))} {cumulative}"
            label_text = _label_text(self.label_names, labels)
            yield f"{self.name}_sum{label_text} {format_value(series.sum)}"
            yield f"{self.name}_count{label_text} {series.count}"


def leadership_families(replica: str, leading: bool, transitions: int) -> list[GaugeFamily | CounterFamily]:
    """`llm_monitor_leader{replica}` (1 while this replica leads) and its transition count."""
    leader = GaugeFamily(
        "llm_monitor_leader", "1 while this replica leads (probes, alert rules, notifications), else 0.",
        ("replica",), {(replica,): 1.0 if leading else 0.0},
    )  # fmt: skip
    changes = CounterFamily(
        "llm_monitor_leader_transitions_total", "Times this replica became the leader or stopped leading.",
        ("replica",),
    )  # fmt: skip
    changes.inc((replica,), float(transitions))
    return [leader, changes]


class WriterStats(Protocol):
    """What the result writer counts (`ResultWriter`)."""

    overflowed: int
    rejected: int
    dropped: int

    @property
    def buffered(self) -> int: ...

    def qsize(self) -> int: ...

    def outage_s(self) -> float: ...


def writer_families(inflight: int, writer: WriterStats) -> list[GaugeFamily | CounterFamily]:
    """Runs in flight, the write queue and outage buffer, and the results never stored (by reason)."""
    dropped = CounterFamily(
        "llm_monitor_results_dropped_total",
        "Results never stored: the outage buffer was full, the database refused them, or shutdown came "
        "during an outage.",
        ("reason",),
    )
    dropped.values = {
        ("overflow",): float(writer.overflowed), ("rejected",): float(writer.rejected),
        ("shutdown",): float(writer.dropped - writer.overflowed - writer.rejected),
    }  # fmt: skip
    return [
        GaugeFamily(
            "llm_monitor_probes_in_flight", "Probe runs (and maintenance jobs) now running.",
            values={(): float(inflight)},
        ),
        GaugeFamily(
            "llm_monitor_write_queue_depth", "Results waiting to be written (queued, and held in the outage buffer).",
            values={(): float(writer.qsize())},
        ),
        GaugeFamily(
            "llm_monitor_results_buffered",
            "Results held while the database is unreachable (at most daemon.outage_buffer_max).",
            values={(): float(writer.buffered)},
        ),
        GaugeFamily(
            "llm_monitor_database_outage_seconds",
            "How long the result writer has found the database unreachable (0 while it answers).",
            values={(): writer.outage_s()},
        ),
        dropped,
    ]  # fmt: skip


def alert_families(states: Mapping[str, int], outbox_pending: int | None) -> list[GaugeFamily]:
    """Alert instances by state, and the outbox depth (None: its query failed, so left out)."""
    by_state: dict[Labels, float] = {(state,): float(states.get(state, 0)) for state in (*ALERT_STATES, *states)}
    families = [GaugeFamily("llm_monitor_alerts", "Alert instances by state.", ("state",), by_state)]
    if outbox_pending is not None:
        families.append(
            GaugeFamily(
                "llm_monitor_outbox_pending", "Notifications waiting in the outbox.", values={(): float(outbox_pending)}
            )
        )
    return families


class ScrapeQueries:
    """The database reads of one scrape, each within METRICS_DB_TIMEOUT_S; `failed` flags each by name."""

    def __init__(self) -> None:
        self.failed = GaugeFamily(
            "llm_monitor_metrics_query_failed",
            f"1 when this scrape's database query failed or took over {METRICS_DB_TIMEOUT_S:g} s "
            "(its gauge is left out).",
            ("query",),
        )

    async def run(self, name: str, query: Callable[[], Awaitable[_T]]) -> _T | None:
        """The query's value, or None (logged, and 1 in `failed`) if it failed or took too long."""
        try:
            async with asyncio.timeout(METRICS_DB_TIMEOUT_S):
                value = await query()
        except TimeoutError:
            logger.warning("/metrics: %s query took over %g s; left out of this scrape", name, METRICS_DB_TIMEOUT_S)
        except (StoreError, SQLAlchemyError, OSError) as exc:
            logger.warning("/metrics: %s unavailable: %s", name, exc)
        else:
            self.failed.set((name,), 0.0)
            return value
        self.failed.set((name,), 1.0)
        return None


def outcome(result: ProbeResult) -> str:
    """`ok`, `check_failed`, or the error kind (`timeout`, `http_error`, ...)."""
    if result.error_kind is not None:
        return result.error_kind
    return "ok" if result.ok else "check_failed"


class ProbeMetrics:
    """The daemon's in-process metrics: fed with every probe result and every scheduling delay."""

    def __init__(self) -> None:
        endpoint_labels = ("probe", "target", "endpoint")
        series = ("probe", "target")
        self.started_at_s = time.time()
        self.latency = HistogramFamily(
            "llm_monitor_probe_latency_seconds", "Whole-request latency of probes (failures until they failed).",
            endpoint_labels, LATENCY_BUCKETS_S,
        )  # fmt: skip
        self.ttft = HistogramFamily(
            "llm_monitor_probe_ttft_seconds", "Time to first token of probes.", endpoint_labels, TTFT_BUCKETS_S
        )
        self.itl = HistogramFamily(
            "llm_monitor_probe_itl_seconds", "Inter-token latency: each gap between streamed tokens.",
            endpoint_labels, ITL_BUCKETS_S,
        )  # fmt: skip
        self.results = CounterFamily(
            "llm_monitor_probe_results_total", "Probe results by outcome (ok, check_failed, or the error kind).",
            ("probe", "target", "outcome"),
        )  # fmt: skip
        self.completion_tokens = CounterFamily(
            "llm_monitor_completion_tokens_total", "Completion tokens received by probes.", series
        )
        self.prompt_tokens = CounterFamily("llm_monitor_prompt_tokens_total", "Prompt tokens sent by probes.", series)
        self.truncations = CounterFamily(
            "llm_monitor_truncations_total", "Replies cut by max_tokens (finish_reason length).", series
        )
        self.check_failures = CounterFamily(
            "llm_monitor_check_failures_total", "Failed quality checks, by check name.", ("probe", "target", "check")
        )
        self.lateness = HistogramFamily(
            "llm_monitor_scheduler_lateness_seconds", "Delay between a probe's scheduled time and its start.",
            (), LATENESS_BUCKETS_S,
        )  # fmt: skip
        self.skipped = CounterFamily(
            "llm_monitor_probe_runs_skipped_total",
            "Scheduled runs not started: the previous run was still going (busy) or the run was too late (missed);"
            " or not recorded: this daemon's own event loop stalled during it (stalled).",
            ("probe", "reason"),
        )
        self.loop_lag = HistogramFamily(
            "llm_monitor_event_loop_lag_seconds",
            "How late the daemon's own event loop ran a 0.1 s timer: time it was held off its core.",
            (), LOOP_LAG_BUCKETS_S,
        )  # fmt: skip
        self._families: list[_Family] = [
            self.latency, self.ttft, self.itl, self.results, self.completion_tokens, self.prompt_tokens,
            self.truncations, self.check_failures, self.lateness, self.skipped, self.loop_lag,
        ]  # fmt: skip

    def observe(self, result: ProbeResult) -> None:
        series = (result.probe, result.target)
        labels = (*series, result.endpoint)
        self.results.inc((*series, outcome(result)))
        if result.latency_ms is not None:
            self.latency.observe(labels, result.latency_ms / 1000.0)
        m = result.measurement
        if m is not None:
            if m.ttft_ms is not None:
                self.ttft.observe(labels, m.ttft_ms / 1000.0)
            for gap_ms in m.itl_ms:
                self.itl.observe(labels, gap_ms / 1000.0)
            if m.completion_tokens is not None:
                self.completion_tokens.inc(series, m.completion_tokens)
            if m.prompt_tokens is not None:
                self.prompt_tokens.inc(series, m.prompt_tokens)
        if result.truncated:
            self.truncations.inc(series)
        for check in result.failed_checks():
            self.check_failures.inc((*series, check.name))

    def observe_lateness(self, lateness_s: float) -> None:
        self.lateness.observe((), max(lateness_s, 0.0))

    def observe_loop_lag(self, lag_s: float) -> None:
        self.loop_lag.observe((), lag_s)

    def render(self, extra: Iterable[_Family] = ()) -> str:
        """The whole exposition; `extra` families are computed per scrape (alert states, queue depths)."""
        process = [
            GaugeFamily("llm_monitor_up", "1 while the daemon is running.", values={(): 1.0}),
            GaugeFamily(
                "llm_monitor_build_info",
                "The running llm-monitor version.",
                ("version",),
                values={(__version__,): 1.0},
            ),  # fmt: skip
            GaugeFamily(
                "llm_monitor_start_time_seconds",
                "Start time of the daemon, seconds since the epoch.",
                values={(): self.started_at_s},
            ),  # fmt: skip
        ]
        lines = [line for family in (*process, *self._families, *extra) for line in family.render()]
        return "\n".join(lines) + "\n"
