"""What a span of probe results adds up to: mergeable histograms and buckets, with no I/O.

A `Bucket` is what one rollup row stores and what every trend step, window and page tile is
computed from, so each statistic is derived once, here: percentiles and means from a `Histogram`,
rates (`error_rate` and the others in `monitor.metric_catalog`) from the bucket's counts. Raw
results and stored rollup rows both become buckets, and buckets merge exactly (counts add,
histograms add bucket by bucket), so a span read partly from rollups and partly raw is the same
as one read all raw, up to the histograms' relative accuracy for quantiles.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from monitor.metric_catalog import DISTRIBUTIONS, METRICS, RATE_COUNTS, MetricDef, metric

__all__ = [
    "RELATIVE_ACCURACY",
    "RESULT_COLUMNS",
    "Bucket",
    "Histogram",
    "MetricSummary",
    "floor_time",
]

# Quantiles read from a histogram are within 2 % of a true sample value (DDSketch's scheme).
RELATIVE_ACCURACY = 0.02
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)

# The probe_results columns one result contributes (besides `ok`), in the order `Bucket.add` reads them.
RESULT_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(m.column for m in METRICS))
_ERROR = metric("error_rate")
_CHECKS = metric("check_failure_rate")
_ANSWER_RATES = tuple(m for m in METRICS if m.kind == "rate" and m.over == "answered" and not m.per_check)
_DISTRIBUTIONS = tuple(metric(name) for name in DISTRIBUTIONS)


def floor_time(when: datetime, step_s: int) -> datetime:
    """`when` rounded down to a multiple of `step_s` seconds since the epoch (UTC)."""
    epoch_s = int(when.timestamp())
    return datetime.fromtimestamp(epoch_s - epoch_s % step_s, UTC)


class Histogram:
    """A mergeable log-bucket histogram: dense counts from bucket `offset` on, plus exact count, sum, min, max.

    Bucket i holds values in (gamma^(i-1), gamma^i]. Stored as JSON with short keys, because there
    is one per metric in every rollup row: `{"n", "s", "lo", "hi", "z", "o", "c"}` = count, sum,
    min, max, values <= 0, first bucket index, counts from that index on.
    """

    __slots__ = ("count", "counts", "max", "min", "offset", "sum", "zero")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.zero = 0  # values <= 0 (a reply of 0 tokens)
        self.offset = 0
        self.counts: list[int] = []

    def add(self, value: float) -> None:
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value <= 0:
            self.zero += 1
            return
        index = math.ceil(math.log(value) / _LOG_GAMMA)
        self._cover(index, index + 1)
        self.counts[index - self.offset] += 1

    def _cover(self, low: int, high: int) -> None:
        """Grow `counts` so that indexes low..high-1 exist."""
        if not self.counts:
            self.offset, self.counts = low, [0] * (high - low)
            return
        if low < self.offset:
            self.counts[:0] = [0] * (self.offset - low)
            self.offset = low
        end = self.offset + len(self.counts)
        if high > end:
            self.counts.extend([0] * (high - end))

    def merge(self, other: Histogram) -> None:
        self._merge(other.count, other.sum, other.min, other.max, other.zero, other.offset, other.counts)

    def merge_json(self, data: Mapping[str, Any]) -> None:
        """Merge a histogram in its stored form, without building it first (trends merge thousands)."""
        self._merge(data["n"], data["s"], data["lo"], data["hi"], data["z"], data["o"], data["c"])

    def _merge(
        self, count: int, total: float, low: float, high: float, zero: int, offset: int, counts: list[int]
    ) -> None:
        if not count:
            return
        self.count += count
        self.sum += total
        if low < self.min:
            self.min = low
        if high > self.max:
            self.max = high
        self.zero += zero
        if counts:
            self._cover(offset, offset + len(counts))
            start = offset - self.offset
            end = start + len(counts)
            # Element-wise add in C (map over two lists): trends merge tens of thousands of these.
            self.counts[start:end] = map(operator.add, self.counts[start:end], counts)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1), None when empty; clamped to the exact min and max."""
        if not self.count:
            return None
        if q <= 0 or q >= 1:
            return self.min if q <= 0 else self.max
        rank = q * (self.count - 1)
        seen = self.zero
        if rank < seen:
            return min(max(0.0, self.min), self.max)
        for i, n in enumerate(self.counts):
            seen += n
            if rank < seen:
                estimate = 2 * _GAMMA ** (self.offset + i) / (_GAMMA + 1)
                return min(max(estimate, self.min), self.max)
        return self.max

    def stat(self, agg: str) -> float | None:
        """An alert rule's aggregation (`mean`, `min`, `max`, `p50`, `p95`, `p99`); None when empty."""
        if not self.count:
            return None
        if agg == "mean":
            return self.mean
        if agg in ("min", "max"):
            return self.min if agg == "min" else self.max
        if agg in ("p50", "p95", "p99"):
            return self.quantile(float(agg[1:]) / 100.0)
        raise ValueError(f"aggregation {agg!r} does not apply to a distribution")

    def to_json(self) -> dict[str, Any]:
        return {"n": self.count, "s": self.sum, "lo": self.min, "hi": self.max, "z": self.zero, "o": self.offset,
                "c": self.counts}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        hist = cls()
        hist.merge_json(data)
        return hist


@dataclass(frozen=True, slots=True)
class MetricSummary:
    """A distribution over one span as trends and pages show it (all None when nothing was measured)."""

    count: int
    mean: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, hist: Histogram | None) -> MetricSummary:
        if hist is None or not hist.count:
            return cls(0, None, None, None, None, None)
        return cls(hist.count, hist.mean, hist.quantile(0.5), hist.quantile(0.95), hist.quantile(0.99), hist.max)

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "p50": self.p50, "p95": self.p95, "p99": self.p99,
                "max": self.max}  # fmt: skip


@dataclass(slots=True)
class Bucket:
    """Everything a rollup row holds, as mergeable Python values.

    Distributions, truncations and check failures count only requests that got an answer (no
    `error_kind`); the `errors` count holds the others. `counts` has one entry per rollup count
    column of the catalogue (`errors`, `truncated`).
    """

    results: int = 0
    ok_count: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    check_failures: Counter[str] = field(default_factory=Counter)
    metrics: dict[str, Histogram] = field(default_factory=dict)

    def add(self, ok: bool, columns: Mapping[str, Any]) -> None:
        """Count one raw result: `ok` and its `RESULT_COLUMNS` (probe_results column name -> value)."""
        self.results += 1
        self.ok_count += bool(ok)
        if columns[_ERROR.column] is not None:
            # A failed request has nothing else to measure: it counts for error_rate only.
            self.counts[_ERROR.count] += 1
            return
        for rate in _ANSWER_RATES:
            if columns[rate.column]:
                self.counts[rate.count] += 1
        failed = columns[_CHECKS.column]
        if failed:
            self.check_failures.update(failed.split(","))
        for dist in _DISTRIBUTIONS:
            value = columns[dist.column]
            if value is not None:
                self.histogram(dist.name).add(float(value))

    @property
    def errors(self) -> int:
        """Requests that failed outright (error_kind set), apart from failed checks."""
        return self.counts[_ERROR.count]

    @property
    def answered(self) -> int:
        """Results without an error: the denominator of the answered-only rates."""
        return self.results - self.errors

    def hits(self, name: str, check: str | None = None) -> int:
        """How many results count as hits of the rate `name` (`check` names the check of a per-check rate)."""
        rate = _rate(name)
        if rate.per_check:
            if not check:
                raise ValueError(f"{name} needs the check's name")
            return self.check_failures.get(check, 0)
        return self.counts[rate.count]

    def count(self, name: str) -> int:
        """How many results `name` is computed over: its denominator, or a distribution's values."""
        m = metric(name)
        if m.kind == "distribution":
            hist = self.metrics.get(name)
            return hist.count if hist is not None else 0
        return self.results if m.over == "results" else self.answered

    def rate(self, name: str, check: str | None = None) -> float | None:
        """The rate `name` (`error_rate`, ...) over this bucket; None when nothing counted."""
        total = self.count(name)
        return self.hits(name, check) / total if total else None

    def summary(self, name: str) -> MetricSummary:
        return MetricSummary.of(self.metrics.get(name))

    def histogram(self, name: str) -> Histogram:
        hist = self.metrics.get(name)
        if hist is None:
            hist = self.metrics[name] = Histogram()
        return hist

    def merge(self, other: Bucket) -> None:
        self.results += other.results
        self.ok_count += other.ok_count
        self.counts.update(other.counts)
        self.check_failures.update(other.check_failures)
        for name, hist in other.metrics.items():
            self.histogram(name).merge(hist)

    @classmethod
    def merged(cls, buckets: Iterable[Bucket]) -> Bucket:
        total = cls()
        for bucket in buckets:
            total.merge(bucket)
        return total

    def merge_stored(
        self,
        results: int,
        ok_count: int,
        counts: Sequence[int],
        check_failures: Mapping[str, int] | None,
        metrics: Mapping[str, Mapping[str, Any]],
        *,
        only: Collection[str] | None = None,
    ) -> None:
        """Merge a stored rollup row (`counts` in `RATE_COUNTS` order, histograms in their JSON form).

        Only the distributions in `only` are merged (all when None): a page showing two saves decoding the rest.
        """
        self.results += results
        self.ok_count += ok_count
        for column, n in zip(RATE_COUNTS, counts, strict=True):
            self.counts[column] += n
        if check_failures:
            self.check_failures.update(check_failures)
        for name, data in metrics.items():
            if only is None or name in only:
                self.histogram(name).merge_json(data)

    def to_values(self) -> dict[str, Any]:
        """The probe_rollups columns of this bucket (all but the key)."""
        return {
            "results": self.results, "ok_count": self.ok_count, **{c: self.counts[c] for c in RATE_COUNTS},
            "check_failures": dict(self.check_failures),
            "metrics": {name: hist.to_json() for name, hist in self.metrics.items()},
        }  # fmt: skip


def _rate(name: str) -> MetricDef:
    m = metric(name)
    if m.kind != "rate":
        raise ValueError(f"{name} is a distribution, not a rate")
    return m
