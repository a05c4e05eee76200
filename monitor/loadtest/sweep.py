"""``--sweep``: judge each rate step against the SLO and find the highest sustainable rate (goodput).

A step is judged on the requests that finished between its start plus a warm-up and its end.
Its metrics include the golden-answer pass rate (``quality_rate``) and, for a priced target, its
cost. It passes when every SLO clause holds there and the server kept up: at least
``MIN_COMPLETION_RATIO`` of the requests sent in the step finished in it (give or take one
second of arrivals). Otherwise queues only grow, and a longer step would break the SLO anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from monitor.config.deployment import PriceSettings
from monitor.loadtest.cost import cost_metrics
from monitor.loadtest.recorder import RunData
from monitor.loadtest.slo import Objective, ObjectiveResult, evaluate
from monitor.loadtest.slo_metrics import metric_value, summarize

__all__ = ["MIN_COMPLETION_RATIO", "StepResult", "evaluate_step", "goodput"]

MIN_COMPLETION_RATIO = 0.9
BUCKET_SLACK_S = 1.0


@dataclass(frozen=True, slots=True)
class StepResult:
    index: int
    rate: float
    start_s: float  # relative to the start of the test
    end_s: float
    sent: int
    metrics: dict[str, float | None]
    results: tuple[ObjectiveResult, ...]
    kept_up: bool

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
) -> StepResult:
    assert data.t0 is not None, "steps are judged once the test has started"
    start_s, end_s = bounds
    judged_from = data.t0 + start_s + min(warmup_s, (end_s - start_s) / 2)
    judged_to = data.t0 + end_s
    # Whole seconds that overlap the judged span (windows are per wall-clock second).
    window = data.window(math.floor(judged_from), judged_to)
    span_s = max(1.0, math.ceil(judged_to) - math.floor(judged_from))
    costs = cost_metrics(window, price) if price is not None else {}
    extra = {**data.server.values(math.floor(judged_from), judged_to), **costs}
    results = evaluate(objectives, lambda name: metric_value(name, window, span_s, extra))
    # Sent counts by intended second, finished by completion second: allow a second's worth.
    kept_up = window.sent > 0 and window.requests >= MIN_COMPLETION_RATIO * window.sent - rate * BUCKET_SLACK_S
    metrics = {**summarize(window, span_s), **costs}
    return StepResult(index, rate, start_s, end_s, window.sent, metrics, results, kept_up)


def goodput(steps: list[StepResult]) -> StepResult | None:
    """The highest-rate step that passed, if any."""
    passed = [s for s in steps if s.passed]
    return max(passed, key=lambda s: s.rate) if passed else None
