"""Service-level objectives for load tests: ``"ttft_p95_ms<=500,itl_p95_ms<=50,error_rate<=0.01"``.

A clause is ``METRIC OP NUMBER`` with OP one of ``<= < >= >`` (``==`` is refused: latencies are
never equal to a threshold on purpose). Rates may be written as percentages (``error_rate<=1%``).
Clauses are separated by commas; every clause must hold for the run to pass. A metric that was
not measured (for example ITL when every request failed) fails its clause.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from monitor.errors import ConfigError
from monitor.loadtest.slo_metrics import METRIC_HELP, is_metric

__all__ = ["Objective", "ObjectiveResult", "evaluate", "parse_slo", "verdict"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}
_CLAUSE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(<=|>=|==|=|<|>)\s*([^<>=\s]\S*)\s*$")


@dataclass(frozen=True, slots=True)
class Objective:
    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"

    def holds(self, value: float | None) -> bool:
        return value is not None and _OPS[self.op](value, self.threshold)

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "op": self.op, "threshold": self.threshold}


@dataclass(frozen=True, slots=True)
class ObjectiveResult:
    objective: Objective
    value: float | None
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return {**self.objective.to_json(), "value": self.value, "passed": self.passed}


def parse_slo(expression: str) -> tuple[Objective, ...]:
    """Parse an SLO expression; a bad clause raises ConfigError naming it (``--slo: clause 2 ...``)."""
    clauses = expression.split(",")
    if not expression.strip():
        raise ConfigError("--slo: empty expression (example: ttft_p95_ms<=500,error_rate<=0.01)")
    objectives: list[Objective] = []
    for number, clause in enumerate(clauses, start=1):
        where = f"--slo: clause {number} {clause.strip()!r}"
        if not clause.strip():
            raise ConfigError(f"--slo: clause {number} is empty (stray comma?)")
        match = _CLAUSE.match(clause)
        if match is None:
            raise ConfigError(f"{where}: expected METRIC OP NUMBER, for example ttft_p95_ms<=500")
        metric, op, raw = match.groups()
        if op in ("==", "="):
            raise ConfigError(f"{where}: use <=, <, >= or > (equality is not an objective)")
        if not is_metric(metric):
            raise ConfigError(f"{where}: unknown metric {metric!r} (known: {METRIC_HELP})")
        threshold = _number(raw, metric, where)
        objectives.append(Objective(metric, op, threshold))
    return tuple(objectives)


def _number(raw: str, metric: str, where: str) -> float:
    percent = raw.endswith("%")
    try:
        value = float(raw[:-1] if percent else raw)
    except ValueError:
        raise ConfigError(f"{where}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {raw!r} is not a finite number")
    if percent:
        if not metric.endswith("_rate"):
            raise ConfigError(f"{where}: a percentage only makes sense for a *_rate metric")
        value /= 100.0
    if metric.endswith("_rate") and not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where}: a rate is a fraction between 0 and 1 (or a percentage such as 1%)")
    if value < 0:
        raise ConfigError(f"{where}: thresholds cannot be negative")
    return value


def evaluate(objectives: tuple[Objective, ...], value_of: Callable[[str], float | None]) -> tuple[ObjectiveResult, ...]:
    """Each objective against ``value_of(metric)``; an unmeasured metric (None) fails."""
    results = []
    for objective in objectives:
        value = value_of(objective.metric)
        results.append(ObjectiveResult(objective, value, objective.holds(value)))
    return tuple(results)


def verdict(results: tuple[ObjectiveResult, ...]) -> str:
    return "pass" if all(r.passed for r in results) else "fail"
