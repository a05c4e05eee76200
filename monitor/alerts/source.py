"""Where rule inputs come from: window aggregates of a metric, and the recent raw history of a probe.

Metric definitions (what one stored result contributes):

| metric               | per result                                          | results counted              |
| -------------------- | --------------------------------------------------- | ---------------------------- |
| `latency_ms`         | end-to-end latency                                  | requests without error_kind  |
| `ttft_ms`            | time to first token (streaming only)                | requests without error_kind  |
| `itl_ms`             | the request's mean inter-token latency              | requests without error_kind  |
| `completion_tokens`  | completion tokens (server usage, else estimated)    | requests without error_kind  |
| `error_rate`         | 1 if the request failed (error_kind set), else 0    | every result                 |
| `truncation_rate`    | 1 if finish_reason was `length`, else 0             | requests without error_kind  |
| `check_failure_rate` | 1 if the named check failed, else 0                 | requests without error_kind  |

`agg` is then taken over those per-result values: mean, p50/p95/p99 (linear interpolation), max,
min, or rate (the mean of the 0/1 values of a rate metric).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.results import percentile
from monitor.store.models import DAEMON_RESULTS, ProbeResultRow

__all__ = ["Aggregate", "RawWindowSource", "RecentResult", "ResultHistory", "WindowSource", "aggregate_values"]

_VALUE_COLUMNS: dict[str, Any] = {
    "latency_ms": ProbeResultRow.latency_ms,
    "ttft_ms": ProbeResultRow.ttft_ms,
    "itl_ms": ProbeResultRow.itl_ms_mean,
    "completion_tokens": ProbeResultRow.completion_tokens,
}


@dataclass(frozen=True, slots=True)
class Aggregate:
    """An aggregate over a window: None when no result contributed (`count` is 0)."""

    value: float | None
    count: int


class WindowSource(Protocol):
    async def aggregate(
        self, *, metric: str, agg: str, probe: str, since: datetime, until: datetime, check: str | None = None
    ) -> Aggregate:
        """`agg` of `metric` over the results of `probe` with since <= started_at < until."""
        ...


def aggregate_values(values: list[float], agg: str) -> float | None:
    """Reduce per-result values; None for no values."""
    if not values:
        return None
    if agg in ("mean", "rate"):
        return sum(values) / len(values)
    if agg == "max":
        return max(values)
    if agg == "min":
        return min(values)
    if agg in ("p50", "p95", "p99"):
        return percentile(values, float(agg[1:]))
    raise ValueError(f"unknown aggregation {agg!r}")


class RawWindowSource:
    """Aggregates computed from `probe_results` (one indexed range scan per call, one column fetched)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def aggregate(
        self, *, metric: str, agg: str, probe: str, since: datetime, until: datetime, check: str | None = None
    ) -> Aggregate:
        in_window = (
            DAEMON_RESULTS,
            ProbeResultRow.probe == probe,
            ProbeResultRow.started_at >= since,
            ProbeResultRow.started_at < until,
        )
        values: list[float]
        async with self._sessionmaker() as session:
            if metric in _VALUE_COLUMNS:
                column = _VALUE_COLUMNS[metric]
                query = select(column).where(*in_window, ProbeResultRow.error_kind.is_(None), column.is_not(None))
                values = [float(v) for v in (await session.scalars(query)).all()]
            elif metric == "error_rate":
                query = select(ProbeResultRow.error_kind).where(*in_window)
                values = [0.0 if kind is None else 1.0 for kind in (await session.scalars(query)).all()]
            elif metric == "truncation_rate":
                query = select(ProbeResultRow.truncated).where(*in_window, ProbeResultRow.error_kind.is_(None))
                values = [1.0 if flag else 0.0 for flag in (await session.scalars(query)).all()]
            elif metric == "check_failure_rate":
                if not check:
                    raise ValueError("check_failure_rate needs the check's name")
                query = select(ProbeResultRow.failed_checks).where(*in_window, ProbeResultRow.error_kind.is_(None))
                rows = (await session.scalars(query)).all()
                values = [1.0 if check in failed.split(",") else 0.0 for failed in rows]
            else:
                raise ValueError(f"unknown metric {metric!r}")
        return Aggregate(aggregate_values(values, agg), len(values))


@dataclass(frozen=True, slots=True)
class RecentResult:
    started_at: datetime
    ok: bool
    error_kind: str | None
    error_detail: str | None
    failed_checks: str

    def describe_failure(self) -> str:
        """A one-line reason (it may quote the target's own text: formats escape it)."""
        if self.error_kind is not None:
            return f"{self.error_kind}: {self.error_detail}" if self.error_detail else self.error_kind
        if self.failed_checks:
            return f"failed checks: {self.failed_checks.replace(',', ', ')}"
        return ""


class ResultHistory:
    """The raw queries absence and consecutive-failure rules need (always recent rows, always indexed)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def latest(self, probe: str, limit: int, *, until: datetime | None = None) -> list[RecentResult]:
        """The newest `limit` results of `probe` (started before `until`), newest first."""
        query = select(
            ProbeResultRow.started_at,
            ProbeResultRow.ok,
            ProbeResultRow.error_kind,
            ProbeResultRow.error_detail,
            ProbeResultRow.failed_checks,
        ).where(DAEMON_RESULTS, ProbeResultRow.probe == probe)
        if until is not None:
            query = query.where(ProbeResultRow.started_at <= until)
        query = query.order_by(ProbeResultRow.started_at.desc(), ProbeResultRow.id.desc()).limit(limit)
        async with self._sessionmaker() as session:
            rows = (await session.execute(query)).all()
        return [RecentResult(r[0], bool(r[1]), r[2], r[3], r[4]) for r in rows]

    async def last_ok_at(self, probe: str, *, until: datetime | None = None) -> datetime | None:
        """When `probe` last produced an ok result (None if never)."""
        query = select(ProbeResultRow.started_at).where(
            DAEMON_RESULTS, ProbeResultRow.probe == probe, ProbeResultRow.ok.is_(True)
        )
        if until is not None:
            query = query.where(ProbeResultRow.started_at <= until)
        # ORDER BY ... LIMIT 1 walks the (probe, started_at) index backwards on both backends.
        query = query.order_by(ProbeResultRow.started_at.desc()).limit(1)
        async with self._sessionmaker() as session:
            return (await session.execute(query)).scalar_one_or_none()
