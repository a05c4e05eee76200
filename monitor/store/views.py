"""Typed views of stored probe results: what `Store` reads return, never ORM rows or dicts.

A view's fields are columns of `probe_results` under the columns' names, and `StoredResult` (the
whole row) extends `ResultLine` (what a list shows). Both turn into JSON the same way, in one place
(`to_json`): each column's value under its name, times in ISO 8601, tuples as lists. The API's
results, the probe page's replies, the overview's newest results and a load run's canaries are
therefore one form of a result, cut to the columns each reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from monitor.results import CheckResult
from monitor.store.models import ProbeResultRow

__all__ = ["RESULT_LINE_COLUMNS", "CanaryStats", "OneShotRow", "ResultLine", "StoredResult", "split_names"]


def split_names(joined: str | None) -> tuple[str, ...]:
    """The names in a comma-joined column (`failed_checks`); "" and NULL are none."""
    return tuple(joined.split(",")) if joined else ()


def _json(view: ResultLine | StoredResult) -> dict[str, Any]:
    return {f.name: _json_value(getattr(view, f.name)) for f in fields(view)}


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return [item.to_json() if isinstance(item, CheckResult) else item for item in value]
    return value


@dataclass(frozen=True, slots=True)
class ResultLine:
    """One result in a list (the overview's newest result, a load run's canaries): its outcome and main numbers."""

    started_at: datetime  # timezone-aware UTC
    probe: str
    target: str
    endpoint: str
    stream: bool
    ok: bool
    error_kind: str | None
    latency_ms: float | None
    ttft_ms: float | None
    finish_reason: str | None
    failed_checks: tuple[str, ...]

    @staticmethod
    def of_columns(values: Sequence[Any]) -> ResultLine:
        """The view of one row of `RESULT_LINE_COLUMNS` (in that order)."""
        data = dict(zip(_LINE_FIELDS, values, strict=True))
        # Rows fetched as plain tuples (the trend reader's) may carry SQLite's 0/1 for booleans.
        data["stream"], data["ok"] = bool(data["stream"]), bool(data["ok"])
        data["failed_checks"] = split_names(data["failed_checks"])
        return ResultLine(**data)

    def to_json(self) -> dict[str, Any]:
        return _json(self)


_LINE_FIELDS = tuple(f.name for f in fields(ResultLine))
# What a query selects for `ResultLine.of_columns`: the columns of the same names.
RESULT_LINE_COLUMNS = tuple(getattr(ProbeResultRow, name) for name in _LINE_FIELDS)


@dataclass(frozen=True, slots=True)
class StoredResult(ResultLine):
    """One whole row of `probe_results`, detached from the session; `to_json` is the `/api/v1/results` form."""

    id: int
    error_detail: str | None
    timeout_phase: str | None
    http_status: int | None
    itl_ms_mean: float | None
    itl_ms_p95: float | None
    itl_ms_max: float | None
    chunk_count: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_estimated: bool | None
    stop_reason: str | None
    max_tokens: int | None
    truncated: bool
    text_sample: str | None
    checks: tuple[CheckResult, ...]
    load_run_id: int | None
    source: str  # daemon | probe | doctor (see `monitor.store.models.ResultSource`)
    sanitised: bool  # the server's text was cleaned before it was stored (see monitor.untrusted)
    ttfa_ms: float | None  # migration 0008: None on older rows
    reasoning_tokens: int | None
    reasoning_tokens_estimated: bool | None
    tool_call_count: int | None
    golden_similarity: float | None  # migration 0012: None without expect.golden (or ungraded)
    golden_method: str | None
    golden_passed: bool | None
    cost: float | None  # targets[].price, in cost_currency; estimated when tokens_estimated
    cost_currency: str | None

    @staticmethod
    def of_row(row: ProbeResultRow) -> StoredResult:
        data = {name: getattr(row, name) for name in _STORED_FIELDS}
        data["checks"] = tuple(CheckResult(name=c["name"], passed=c["passed"], detail=c["detail"]) for c in row.checks)
        data["failed_checks"] = split_names(row.failed_checks)
        return StoredResult(**data)


_STORED_FIELDS = tuple(f.name for f in fields(StoredResult))


@dataclass(frozen=True, slots=True)
class OneShotRow:
    """One probe's results from one-shot commands (`llm-monitor probe`, `doctor`) since some time."""

    source: str  # probe | doctor
    probe: str
    target: str
    results: int
    not_ok: int
    last_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "probe": self.probe, "target": self.target, "results": self.results,
            "not_ok": self.not_ok, "last_at": self.last_at.isoformat(),
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class CanaryStats:
    """The results linked to one load run (its canaries): how many, how many passed, their TTFT p95."""

    count: int
    ok: int
    ttft_p95_ms: float | None

    @property
    def ok_rate(self) -> float | None:
        return self.ok / self.count if self.count else None

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "ok": self.ok, "ok_rate": self.ok_rate, "ttft_p95_ms": self.ttft_p95_ms}
