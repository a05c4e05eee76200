"""Read-only data for the load-run pages: the run list, one run's series and canaries, a baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.alerts.model import iso
from monitor.loadtest.repo import LoadRun, LoadStore, SeriesPoint
from monitor.store.repo import Store
from monitor.store.views import ResultLine

__all__ = ["COMPARED", "Comparison", "LoadRunDetail", "LoadRuns", "run_json"]

RUN_LIST_LIMIT = 100
CANARY_LIMIT = 200
# Metrics compared against a baseline: (summary key, label, unit, higher is better).
COMPARED: tuple[tuple[str, str, str, bool], ...] = (
    ("rps", "Requests/s", "/s", True),
    ("tokens_per_s", "Output tokens/s", "/s", True),
    ("ttft_p50_ms", "TTFT p50", "ms", False),
    ("ttft_p95_ms", "TTFT p95", "ms", False),
    ("itl_p50_ms", "ITL p50", "ms", False),
    ("itl_p95_ms", "ITL p95", "ms", False),
    ("e2e_p95_ms", "Latency p95", "ms", False),
    ("error_rate", "Error rate", "%", False),
    ("truncation_rate", "Truncation rate", "%", False),
    ("canary_ok_rate", "Canary OK rate", "%", True),
)


def metrics_of(run: LoadRun) -> dict[str, float | None]:
    """The run's whole-run metrics, plus the canary OK rate (None where not measured)."""
    summary = run.summary or {}
    metrics: dict[str, float | None] = dict(summary.get("metrics") or {})
    canary = summary.get("canary") or {}
    metrics["canary_ok_rate"] = canary.get("ok_rate")
    return metrics


def run_json(run: LoadRun) -> dict[str, Any]:
    """A run for the JSON API: parameters, verdict and metrics (no credentials are ever stored)."""
    return {
        "id": run.id,
        "started_at": iso(run.started_at),
        "ended_at": iso(run.ended_at),
        "status": run.status,
        "verdict": run.verdict,
        "target": run.target,
        "model": run.model,
        "params": run.params,
        "slo": run.slo,
        "metrics": metrics_of(run),
        "baseline_id": run.baseline_id,
        "abort_reason": run.abort_reason,
    }


@dataclass(frozen=True, slots=True)
class Comparison:
    key: str
    label: str
    unit: str
    value: float | None
    baseline: float | None
    higher_is_better: bool

    @property
    def change(self) -> float | None:
        """Relative change against the baseline (0.1 = 10 % more), None when not comparable."""
        if self.value is None or self.baseline is None or self.baseline == 0:
            return None
        return (self.value - self.baseline) / abs(self.baseline)

    @property
    def verdict(self) -> str:
        """`better`, `worse` or `same` (within 5 %), or `n/a`."""
        change = self.change
        if change is None:
            return "n/a"
        if abs(change) < 0.05:
            return "same"
        return "better" if (change > 0) == self.higher_is_better else "worse"

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.key,
            "value": self.value,
            "baseline": self.baseline,
            "change": self.change,
            "verdict": self.verdict,
        }


@dataclass(frozen=True, slots=True)
class LoadRunDetail:
    run: LoadRun
    series: list[SeriesPoint]
    canaries: list[ResultLine]
    baseline: LoadRun | None
    baseline_series: list[SeriesPoint]
    comparison: list[Comparison]
    others: list[LoadRun]  # candidates for the baseline picker

    def to_json(self) -> dict[str, Any]:
        return {
            "run": run_json(self.run),
            "series": [p.to_json() for p in self.series],
            "canaries": [c.to_json() for c in self.canaries],
            "baseline": run_json(self.baseline) if self.baseline is not None else None,
            "comparison": [c.to_json() for c in self.comparison],
        }


class LoadRuns:
    """What the load-run pages read: runs through `LoadStore`, their canaries through `Store`."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._store = LoadStore(sessionmaker)
        self._results = Store(sessionmaker)

    async def runs(self, limit: int = RUN_LIST_LIMIT) -> list[LoadRun]:
        return await self._store.runs(limit)

    async def canaries(self, run_id: int) -> list[ResultLine]:
        return await self._results.canaries(run_id, limit=CANARY_LIMIT)

    async def detail(self, run_id: int, baseline_id: int | None = None) -> LoadRunDetail | None:
        """One run with its series and canaries; the baseline is `baseline_id`, else the run's own."""
        run = await self._store.get_run(run_id)
        if run is None:
            return None
        chosen = baseline_id if baseline_id is not None else run.baseline_id
        baseline = await self._store.get_run(chosen) if chosen is not None and chosen != run_id else None
        series = await self._store.series(run_id)
        baseline_series = await self._store.series(baseline.id) if baseline is not None else []
        comparison: list[Comparison] = []
        if baseline is not None:
            mine, theirs = metrics_of(run), metrics_of(baseline)
            comparison = [
                Comparison(key, label, unit, mine.get(key), theirs.get(key), higher)
                for key, label, unit, higher in COMPARED
            ]
        others = [r for r in await self.runs() if r.id != run_id]
        return LoadRunDetail(
            run=run,
            series=series,
            canaries=await self.canaries(run_id),
            baseline=baseline,
            baseline_series=baseline_series,
            comparison=comparison,
            others=others,
        )
