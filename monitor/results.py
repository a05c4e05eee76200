"""Plain result types shared by probes, checks, the store and the CLI (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from monitor.meter import Endpoint, StreamMeasurement

ErrorKind = Literal["connect_error", "timeout", "http_error", "bad_response", "stream_error", "body_too_large"]
ERROR_KINDS: tuple[ErrorKind, ...] = (
    "connect_error", "timeout", "http_error", "bad_response", "stream_error", "body_too_large",
)  # fmt: skip
TimeoutPhase = Literal["connect", "first_byte", "gap", "total"]

# Stored and printed replies are capped so a run-on reply cannot bloat the database.
TEXT_SAMPLE_CHARS = 2000
_ROUNDED = ("ttft_ms", "ttfa_ms", "latency_ms", "itl_ms_mean", "itl_ms_p95")


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    passed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe request: what was asked, what was measured, what was checked."""

    probe: str
    target: str
    endpoint: Endpoint
    stream: bool
    started_at: datetime  # timezone-aware UTC
    max_tokens: int | None
    http_status: int | None = None
    error_kind: ErrorKind | None = None
    error_detail: str | None = None
    timeout_phase: TimeoutPhase | None = None
    measurement: StreamMeasurement | None = None
    checks: tuple[CheckResult, ...] = field(default_factory=tuple)
    # Wall time until the failure for results without a measurement.
    elapsed_ms: float | None = None
    # Server text (reply, reasons, error detail) had characters replaced to be storable (monitor.untrusted).
    sanitised: bool = False
    # expect.golden: the reply's similarity to the golden answer, by which method, and whether it passed
    # (None: no golden answer, or it could not be graded: the check says why).
    golden_similarity: float | None = None
    golden_method: str | None = None
    golden_passed: bool | None = None
    # targets[].price: this request's cost from its token counts (estimated when `tokens_estimated`).
    cost: float | None = None
    cost_currency: str | None = None

    @property
    def ok(self) -> bool:
        """The request succeeded and every check passed."""
        return self.error_kind is None and all(c.passed for c in self.checks)

    @property
    def truncated(self) -> bool:
        return self.measurement is not None and self.measurement.finish_reason == "length"

    @property
    def latency_ms(self) -> float | None:
        return self.measurement.latency_ms if self.measurement is not None else self.elapsed_ms

    @property
    def itl_ms_mean(self) -> float | None:
        m = self.measurement
        if m is None or not m.itl_ms:
            return None
        return sum(m.itl_ms) / len(m.itl_ms)

    @property
    def itl_ms_p95(self) -> float | None:
        m = self.measurement
        if m is None or not m.itl_ms:
            return None
        return percentile(m.itl_ms, 95.0)

    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def flat(self) -> dict[str, Any]:
        """The result as flat named values: the one flattening, which the store writes and `probe --json` prints.

        The names are the stored columns' (`monitor.store.models.ProbeResultRow`), except the whole
        reply, `text`; values are as measured (not rounded or cut short), checks as `CheckResult`s.
        """
        m = self.measurement
        return {
            "probe": self.probe,
            "target": self.target,
            "endpoint": self.endpoint,
            "stream": self.stream,
            "started_at": self.started_at,
            "ok": self.ok,
            "error_kind": self.error_kind,
            "error_detail": self.error_detail,
            "timeout_phase": self.timeout_phase,
            "http_status": self.http_status,
            "ttft_ms": m.ttft_ms if m else None,
            "latency_ms": self.latency_ms,
            "itl_ms_mean": self.itl_ms_mean,
            "itl_ms_p95": self.itl_ms_p95,
            "itl_ms_max": max(m.itl_ms) if m and m.itl_ms else None,
            "chunk_count": m.chunk_count if m else None,
            "prompt_tokens": m.prompt_tokens if m else None,
            "completion_tokens": m.completion_tokens if m else None,
            "tokens_estimated": m.tokens_estimated if m else None,
            "finish_reason": m.finish_reason if m else None,
            "stop_reason": m.stop_reason if m else None,
            "max_tokens": self.max_tokens,
            "truncated": self.truncated,
            "text": m.text if m else None,
            "sanitised": self.sanitised,
            "checks": self.checks,
            "ttfa_ms": m.ttfa_ms if m else None,
            "reasoning_tokens": m.reasoning_tokens if m else None,
            "reasoning_tokens_estimated": m.reasoning_tokens_estimated if m else None,
            "tool_call_count": len(m.tool_calls) if m else None,
            "golden_similarity": self.golden_similarity,
            "golden_method": self.golden_method,
            "golden_passed": self.golden_passed,
            "cost": self.cost,
            "cost_currency": self.cost_currency,
        }

    def to_json(self) -> dict[str, Any]:
        """The `probe --json` contract (docs/probes.md): `flat()`, times in ISO 8601, milliseconds to 3 places."""
        data = self.flat()
        del data["itl_ms_max"]  # stored, but never part of the documented form
        for name in _ROUNDED:
            data[name] = _round(data[name])
        data["started_at"] = self.started_at.isoformat()
        if data["text"] is not None:
            data["text"] = data["text"][:TEXT_SAMPLE_CHARS]
        data["checks"] = [c.to_json() for c in self.checks]
        # A cost from estimated token counts is an estimate too, and says so.
        data["cost_estimated"] = bool(data["tokens_estimated"]) if self.cost is not None else None
        return data


def percentile(values: tuple[float, ...] | list[float], pct: float) -> float:
    """Linear-interpolated percentile (the same definition as numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
