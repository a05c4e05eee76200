"""Has the server saturated at this arrival rate? Pure: judged on one sweep step's whole seconds.

Three signs, any one of which means the queue in front of the server only grows and a longer step
would not change the answer (GuideLLM's over-saturation stop looks at the same two trends, in-flight
requests and TTFT):

- **behind**: the requests sent and not finished in the step exceed ``SHORTFALL`` of those sent, plus
  what a server that keeps up may still hold at the step's end: ``L`` = rate x the step's median E2E
  (at least one second: sent counts by intended second, finished by completion second), which is also
  the most a step's start can add as in-flight requests rise to the new rate (Little's law), plus
  three standard deviations of that count (``3 sqrt(L + 1)``). A few requests at a low rate are
  thus never "behind" by chance: at 1 req/s, 3 of 5 finished is not saturation. ``L`` is at most the
  generator's in-flight cap (``--max-inflight`` per scheduler): a server that keeps up never has more
  outstanding than that, while the E2E of one that does not, measured from the intended send time,
  grows with the very queue being judged and would otherwise excuse it. A span in which nothing was
  offered is behind only when a Poisson schedule at the rate would have offered something with
  p > 99.9 % (``rate x span >= NOTHING_OFFERED_EXPECTED``): a 2 req/s step judged on one whole second
  offers nothing by chance once in 7.4 steps. Past that bound an empty span is the generator's own
  failure, and the step must not pass as kept up.
- **in flight**: the requests sent and not yet finished keep growing through the step.
- **queueing**: TTFT (its per-second median) keeps growing through the step.

A trend counts only when it is both significant and large, so that a healthy server at a steady
rate never trips it, however noisy: a Mann-Kendall test (one-sided, z >= ``TREND_Z``, p < 0.001, no
tie correction, which errs towards no trend), and a growth from the median of the first third of the
step's seconds to the median of the last third of at least ``GROWTH_RATIO`` of the first, and at
least an absolute floor (``MIN_INFLIGHT_GROWTH``, ``MIN_QUEUE_GROWTH_S`` seconds of arrivals,
``MIN_TTFT_GROWTH_MS``). A steady series whose every value stays within 20 % of one level cannot
grow by more than half of its first third, whatever order its values come in. Trends need ``MIN_TREND_SECONDS``
seconds; a shorter step is judged on "behind" alone.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "MIN_TREND_SECONDS",
    "NOTHING_OFFERED_EXPECTED",
    "SHORTFALL",
    "Saturation",
    "Second",
    "growth",
    "judge",
    "trend_z",
]

SHORTFALL = 0.1
BUCKET_SLACK_S = 1.0
TREND_Z = 3.09  # one-sided p < 0.001
GROWTH_RATIO = 0.5
MIN_TREND_SECONDS = 8  # below 8 seconds not even a strictly rising series reaches TREND_Z
MIN_INFLIGHT_GROWTH = 4
MIN_QUEUE_GROWTH_S = 1.0
MIN_TTFT_GROWTH_MS = 25.0
# The arrivals expected in a span that a Poisson schedule leaves empty 0.1 % of the time.
NOTHING_OFFERED_EXPECTED = -math.log(0.001)

Kind = Literal["behind", "in_flight", "queueing"]


@dataclass(frozen=True, slots=True)
class Second:
    """One whole second of a step: requests due (by intended time, offered whether a slot was free or not)
    and finished in it, those outstanding at its end (due since the run began and not finished: in flight
    or waiting for a slot), and the median TTFT of its successful requests."""

    sent: int
    finished: int
    in_flight: int
    ttft_p50_ms: float | None


@dataclass(frozen=True, slots=True)
class Saturation:
    kind: Kind
    detail: str  # one line, for the progress and the reports

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail}


def trend_z(values: Sequence[float]) -> float:
    """Mann-Kendall z of an upward trend in ``values`` (time order); 0 when there is none or too few."""
    n = len(values)
    if n < 3:
        return 0.0
    s = sum((values[j] > values[i]) - (values[j] < values[i]) for i in range(n - 1) for j in range(i + 1, n))
    if s <= 0:
        return 0.0
    return (s - 1) / math.sqrt(n * (n - 1) * (2 * n + 5) / 18)


def growth(values: Sequence[float]) -> tuple[float, float]:
    """(median of the first third, median of the last third) of ``values``."""
    third = max(1, len(values) // 3)
    return statistics.median(values[:third]), statistics.median(values[-third:])


def _grows(values: Sequence[float], floor: float) -> tuple[float, float] | None:
    """(first, last) levels when ``values`` grow significantly and by at least half and ``floor``; else None."""
    if len(values) < MIN_TREND_SECONDS or trend_z(values) < TREND_Z:
        return None
    first, last = growth(values)
    return (first, last) if last - first > max(GROWTH_RATIO * first, floor) else None


def judge(
    seconds: Sequence[Second],
    rate: float,
    totals: tuple[int, int, float] | None = None,
    e2e_p50_ms: float | None = None,
    inflight_cap: int | None = None,
) -> Saturation | None:
    """Whether the server saturated in a step offered ``rate`` req/s, judged on its whole ``seconds``.

    ``totals``: (sent, finished, span_s) of the whole judged span, partial seconds included, for the
    "behind" sign (a step shorter than two seconds has no whole second); by default, of ``seconds``.
    ``e2e_p50_ms``: the step's median end-to-end latency (None: not known, one second is assumed).
    ``inflight_cap``: the most requests the generator keeps in flight (None: no cap).
    """
    if totals is None:
        totals = (sum(s.sent for s in seconds), sum(s.finished for s in seconds), float(max(1, len(seconds))))
    sent, finished, span_s = totals
    held = rate * max(BUCKET_SLACK_S, (e2e_p50_ms or 0.0) / 1000.0)
    if inflight_cap is not None:
        held = min(held, float(inflight_cap))
    if sent == 0 and rate * span_s >= NOTHING_OFFERED_EXPECTED:
        return Saturation(
            "behind", f"nothing was offered in {span_s:g} s at {rate:g} req/s: the generator fell behind its schedule"
        )
    if sent - finished > SHORTFALL * sent + held + 3 * math.sqrt(held + 1):
        return Saturation(
            "behind",
            f"{finished / span_s:.1f} finished/s of {sent / span_s:.1f} offered/s: the finished rate stopped "
            "following the arrival rate",
        )
    in_flight = _grows([float(s.in_flight) for s in seconds], max(MIN_INFLIGHT_GROWTH, rate * MIN_QUEUE_GROWTH_S))
    if in_flight is not None:
        return Saturation(
            "in_flight", f"requests in flight grew from {in_flight[0]:.0f} to {in_flight[1]:.0f} through the step"
        )
    ttfts = [s.ttft_p50_ms for s in seconds if s.ttft_p50_ms is not None]
    ttft = _grows(ttfts, MIN_TTFT_GROWTH_MS)
    if ttft is not None:
        return Saturation("queueing", f"TTFT p50 grew from {ttft[0]:.0f} to {ttft[1]:.0f} ms through the step")
    return None
