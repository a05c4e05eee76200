"""Per-request goodput: the requests that met every per-request clause (vLLM ``--goodput`` semantics).

``--goodput "ttft_ms<=500,tpot_ms<=50,e2e_ms<=10000"`` (vLLM's own ``ttft:500 tpot:50 e2el:10000``
is accepted too). A request is *good* when it succeeded and each named value is at or below its
limit; a value that was not measured (TTFT of a non-streaming reply) is not good. ``tpot_ms`` is
vLLM's time per output token after the first: (E2E - TTFT) / (output tokens - 1), 0 for one token.

Unlike ``--slo`` (percentiles over a run or a step), these clauses judge each request on its own.
``goodput_rate`` (good / judged) and ``goodput_rps`` (good per second) are then ordinary metrics,
so ``--slo goodput_rate>=0.95`` gates on them. Pure: the Locust users import this module.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from monitor.errors import ConfigError
from monitor.meter_measurement import StreamMeasurement

__all__ = ["CLAUSE_METRICS", "RequestClause", "format_goodput", "is_good", "parse_goodput", "request_value"]

CLAUSE_METRICS = ("ttft_ms", "ttfa_ms", "tpot_ms", "e2e_ms")
# vLLM bench serve's names (`--goodput ttft:500 tpot:50 e2el:10000`).
_VLLM_NAMES = {"ttft": "ttft_ms", "tpot": "tpot_ms", "e2el": "e2e_ms"}
_OURS = re.compile(r"^\s*([a-z0-9_]+)\s*(<=)\s*([^<>=\s]+)\s*$")
_VLLM = re.compile(r"^\s*([a-z0-9_]+)\s*:\s*([^:\s]+)\s*$")


@dataclass(frozen=True, slots=True)
class RequestClause:
    metric: str  # one of CLAUSE_METRICS
    limit_ms: float

    def __str__(self) -> str:
        return f"{self.metric}<={self.limit_ms:g}"


def parse_goodput(spec: str) -> tuple[RequestClause, ...]:
    """``ttft_ms<=500,tpot_ms<=50`` or ``ttft:500 tpot:50``; ConfigError names the bad clause."""
    text = spec.strip()
    if not text:
        raise ConfigError("--goodput: empty (example: ttft_ms<=500,tpot_ms<=50)")
    parts = [p for p in re.split(r"[,\s]+", text) if p] if "<=" not in text else text.split(",")
    clauses: list[RequestClause] = []
    for number, part in enumerate(parts, start=1):
        where = f"--goodput: clause {number} {part.strip()!r}"
        ours, vllm = _OURS.match(part), _VLLM.match(part)
        if ours is not None:
            name, raw = ours.group(1), ours.group(3)
        elif vllm is not None:
            name, raw = _VLLM_NAMES.get(vllm.group(1), vllm.group(1)), vllm.group(2)
        else:
            raise ConfigError(f"{where}: expected METRIC<=MS, for example ttft_ms<=500 (or vLLM's ttft:500)")
        if name not in CLAUSE_METRICS:
            raise ConfigError(f"{where}: unknown metric {name!r} (known: {', '.join(CLAUSE_METRICS)})")
        try:
            limit = float(raw)
        except ValueError:
            raise ConfigError(f"{where}: {raw!r} is not a number of milliseconds") from None
        if not math.isfinite(limit) or limit <= 0:
            raise ConfigError(f"{where}: the limit must be a positive number of milliseconds")
        if any(c.metric == name for c in clauses):
            raise ConfigError(f"{where}: {name} is given twice")
        clauses.append(RequestClause(name, limit))
    return tuple(clauses)


def format_goodput(clauses: tuple[RequestClause, ...]) -> str:
    return ",".join(str(c) for c in clauses)


def request_value(metric: str, m: StreamMeasurement) -> float | None:
    if metric == "ttft_ms":
        return m.ttft_ms
    if metric == "ttfa_ms":
        return m.ttfa_ms
    if metric == "e2e_ms":
        return m.latency_ms
    if metric == "tpot_ms":
        tokens = m.completion_tokens or 0
        if m.ttft_ms is None or tokens < 1:
            return None
        return 0.0 if tokens == 1 else (m.latency_ms - m.ttft_ms) / (tokens - 1)
    raise KeyError(metric)


def is_good(clauses: tuple[RequestClause, ...], m: StreamMeasurement) -> bool:
    """Whether a successful request met every clause (an unmeasured value fails its clause)."""
    for clause in clauses:
        value = request_value(clause.metric, m)
        if value is None or value > clause.limit_ms:
            return False
    return True
