"""``--sweep``: judge each rate step, stop at saturation or at a broken SLO, find goodput and the knee.

A step is judged on the whole seconds between its start plus a warm-up and its end.
Its metrics include the golden-answer pass rate (``quality_rate``) and, for a priced target, its
cost. It passes when every SLO clause holds there and the server kept up: it did not saturate
(``saturation``: the finished rate fell behind the arrival rate, or requests in flight or TTFT
kept growing through the step). A saturated server's queues only grow, and a longer step would
break any SLO anyway. The **knee** is the highest rate the server kept up with before the first
saturated step; **goodput** is the highest rate that passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from monitor.config.deployment import PriceSettings
from monitor.loadtest.cost import cost_metrics
from monitor.loadtest.recorder import RunData
from monitor.loadtest.saturation import Saturation, Second, judge
from monitor.loadtest.slo import Objective, ObjectiveResult, evaluate
from monitor.loadtest.slo_metrics import metric_value, summarize

__all__ = ["StepResult", "evaluate_step", "goodput", "knee"]


@dataclass(frozen=True, slots=True)
class StepResult:
    index: int
    rate: float
    start_s: float  # relative to the start of the test
    end_s: float
    sent: int
    metrics: dict[str, float | None]
    results: tuple[ObjectiveResult, ...]
    saturation: Saturation | None

    @property
    def kept_up(self) -> bool:
        return self.saturation is None

    @property
    def passed(self) -> bool:
        return self.kept_up and all(r.passed for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.index + 1,
            "rate": self.rate,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "sent": self.sent,
            "kept_up": self.kept_up,
            "saturation": self.saturation.to_json() if self.saturation is not None else None,
            "passed": self.passed,
            "metrics": self.metrics,
            "slo": [r.to_json() for r in self.results],
        }


def evaluate_step(
    data: RunData,
    index: int,
    rate: float,
    bounds: tuple[float, float],
    warmup_s: float,
    objectives: tuple[Objective, ...],
    price: PriceSettings | None = None,
    inflight_cap: int | None = None,
) -> StepResult:
    assert data.t0 is not None, "steps are judged once the test has started"
    start_s, end_s = bounds
    judged_from = data.t0 + start_s + min(warmup_s, (end_s - start_s) / 2)
    judged_to = data.t0 + end_s
    # Windows are per wall-clock second: judge the whole seconds inside the span, so that a step is not
    # mixed with the next one (its first fraction of a second at a far higher rate); a step too short
    # for a whole second is judged on the seconds that overlap it.
    first, last = math.ceil(judged_from), math.floor(judged_to)
    if last <= first:
        first, last = math.floor(judged_from), math.ceil(judged_to)
    window = data.window(first, last)
    span_s = float(last - first)
    costs = cost_metrics(window, price) if price is not None else {}
    extra = {**data.server.values(first, last), **costs}
    results = evaluate(objectives, lambda name: metric_value(name, window, span_s, extra))
    metrics = {**summarize(window, span_s), **costs}
    totals = (window.sent, window.requests, span_s)
    saturated = judge(_seconds(data, first, last), rate, totals, metrics.get("e2e_p50_ms"), inflight_cap)
    return StepResult(index, rate, start_s, end_s, window.sent, metrics, results, saturated)


def _seconds(data: RunData, first: int, last: int) -> list[Second]:
    """The seconds ``first`` to ``last - 1``, each with the requests in flight at its end."""
    seconds, in_flight = [], 0
    for t in range(data.first_s if data.first_s is not None else first, last):
        window = data.window(t, t + 1)
        in_flight += window.sent - window.requests
        if t >= first:
            ttft = metric_value("ttft_p50_ms", window, 1.0)
            seconds.append(Second(window.sent, window.requests, in_flight, ttft))
    return seconds


def goodput(steps: list[StepResult]) -> StepResult | None:
    """The highest-rate step that passed, if any."""
    passed = [s for s in steps if s.passed]
    return max(passed, key=lambda s: s.rate) if passed else None


def knee(steps: list[StepResult]) -> dict[str, Any] | None:
    """The highest rate kept up with before the first saturated step; None when no step saturated or the
    first one did (then the knee lies below the sweep's first rate)."""
    first = next((s for s in steps if s.saturation is not None), None)
    if first is None or first.index == 0:
        return None
    below = steps[first.index - 1]
    return {"index": below.index, "rate": below.rate, "finished_rps": below.metrics.get("rps")}
