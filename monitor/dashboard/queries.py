"""Read-only data for the dashboard pages: the overview, a probe's trends and replies, alerts.

Every function takes `now`, so tests can pin the clock. Statistics come from the rollups plus a
raw tail (`monitor.store.trend.TrendReader`, the reader of the API's trends too); latest replies
come from `Store.recent_results`; alerts and silences from the alert engine when the daemon runs
one, else straight from its tables. Everything but the overview's one-shot list reads the daemon's
results only: one-shot runs (`llm-monitor probe`, `doctor`) often reuse the daemon's probe names
and would skew its picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.alerts import repo as alert_repo
from monitor.alerts.engine import AlertsBackend
from monitor.alerts.model import AlertView, SilenceView, iso, parse_iso
from monitor.config import ProbeSettings, Settings
from monitor.dashboard.buckets import OverviewBuckets, read_overview
from monitor.store.bucket import Bucket, floor_time
from monitor.store.models_alerts import OutboxRow
from monitor.store.repo import Store
from monitor.store.server_metrics_repo import ServerMetricsStore, ServerStep
from monitor.store.trend import TrendReader, TrendStep
from monitor.store.views import RESULT_LINE_COLUMNS, OneShotRow, ResultLine, StoredResult

__all__ = [
    "WINDOWS",
    "AlertMark",
    "DashboardData",
    "OneShotRow",
    "Overview",
    "OverviewRow",
    "ProbeDetail",
    "Stats",
    "public_url",
    "truncation_expected",
]

# Probe page windows: name -> (length, step). Steps that are whole hours read hour rollups.
WINDOWS: dict[str, tuple[int, int]] = {
    "1h": (3600, 60),
    "6h": (6 * 3600, 300),
    "24h": (86400, 900),
    "7d": (7 * 86400, 3600),
    "30d": (30 * 86400, 4 * 3600),
}
# Without ?window=, the probe page shows the first of these that covers the probe's stored results,
# so a young install gets a readable chart instead of a few dots on a day-long axis.
DEFAULT_WINDOWS = ("1h", "6h", "24h")
SPARK_STEPS = 60  # one point per minute over the last hour
RECENT_REPLIES = 10
ALERT_HISTORY_ROWS = 1000
ONESHOT_ROWS = 50


def public_url(url: str) -> str:
    """A target URL safe to show: no user name or password, no query string."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def truncation_expected(settings: ProbeSettings | None, endpoint: str | None) -> bool:
    """Whether finish_reason `length` is normal for this probe (so the pages show it without alarm).

    The rule of `monitor.checks.check_truncated`: completions are continuations that max_tokens
    ends, unless `expect.finish_reason_in` forbids it; chat replies only when that list allows it.
    """
    if settings is None:
        return endpoint == "completion"
    allowed = settings.expect.finish_reason_in
    if settings.endpoint == "completion":
        return allowed is None or "length" in allowed
    return allowed is not None and "length" in allowed


@dataclass(frozen=True, slots=True)
class Stats:
    """Counts and percentiles of one probe over one window."""

    results: int
    errors: int
    truncated: int
    answered: int
    error_rate: float | None
    truncation_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p95_ms: float | None

    @classmethod
    def of(cls, bucket: Bucket) -> Stats:
        # Rates are the bucket's (`Bucket.rate`), as in trends and alert rules.
        latency = bucket.summary("latency_ms")
        return cls(
            results=bucket.results,
            errors=bucket.errors,
            truncated=bucket.hits("truncation_rate"),
            answered=bucket.answered,
            error_rate=bucket.rate("error_rate"),
            truncation_rate=bucket.rate("truncation_rate"),
            latency_p50_ms=latency.p50,
            latency_p95_ms=latency.p95,
            ttft_p95_ms=bucket.summary("ttft_ms").p95,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "results": self.results,
            "errors": self.errors,
            "truncated": self.truncated,
            "error_rate": self.error_rate,
            "truncation_rate": self.truncation_rate,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "ttft_p95_ms": self.ttft_p95_ms,
        }


class _Outcome(Protocol):
    @property
    def ok(self) -> bool: ...

    @property
    def error_kind(self) -> str | None: ...


def result_status(result: _Outcome | None) -> str:
    """`ok`, `error` (the request failed), `failed` (a check failed) or `none`."""
    if result is None:
        return "none"
    if result.error_kind is not None:
        return "error"
    return "ok" if result.ok else "failed"


@dataclass(frozen=True, slots=True)
class OverviewRow:
    probe: str
    target: str
    settings: ProbeSettings | None  # None: results exist but the probe is no longer configured
    last: ResultLine | None
    hour: Stats
    day: Stats
    spark_latency_p95_ms: list[float | None]
    alerts: list[AlertView]

    @property
    def status(self) -> str:
        """`firing`, then the last result's status (`ok`, `error`, `failed`, `none`)."""
        if any(a.state == "firing" for a in self.alerts):
            return "firing"
        return result_status(self.last)

    @property
    def health(self) -> str:
        """`healthy`, `failing` (an alert fires, or the last request or a check failed) or `no_data`."""
        status = self.status
        if status == "none":
            return "no_data"
        return "healthy" if status == "ok" else "failing"

    @property
    def endpoint(self) -> str | None:
        return self.settings.endpoint if self.settings else (self.last.endpoint if self.last else None)

    @property
    def truncation_expected(self) -> bool:
        return truncation_expected(self.settings, self.endpoint)

    def to_json(self) -> dict[str, Any]:
        last = self.last
        return {
            "probe": self.probe,
            "target": self.target,
            "configured": self.settings is not None,
            "endpoint": self.endpoint,
            "status": self.status,
            "truncation_expected": self.truncation_expected,
            "last": None if last is None else last.to_json(),
            "hour": self.hour.to_json(),
            "day": self.day.to_json(),
            "spark_latency_p95_ms": self.spark_latency_p95_ms,
            "alerts": [a.to_json() for a in self.alerts],
        }


@dataclass(frozen=True, slots=True)
class Overview:
    generated_at: datetime
    rows: list[OverviewRow]
    alerts: list[AlertView]  # firing and pending, firing first
    oneshot: list[OneShotRow] = field(default_factory=list)  # newest first

    @property
    def counts(self) -> dict[str, int]:
        """What the tiles show: every row is healthy, failing or without data."""
        health = [r.health for r in self.rows]
        return {"probes": len(health), **{h: health.count(h) for h in ("healthy", "failing", "no_data")}}

    def to_json(self) -> dict[str, Any]:
        return {
            "generated_at": iso(self.generated_at),
            "counts": self.counts,
            "alerts": [a.to_json() for a in self.alerts],
            "rows": [r.to_json() for r in self.rows],
            "oneshot": [r.to_json() for r in self.oneshot],
        }


@dataclass(frozen=True, slots=True)
class AlertMark:
    """One alert episode on a probe's time axis (end None: still pending or firing)."""

    rule: str
    state: str
    start: datetime
    end: datetime | None
    severity: str

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "state": self.state,
            "start": iso(self.start),
            "end": iso(self.end),
            "severity": self.severity,
        }


@dataclass(frozen=True, slots=True)
class ProbeDetail:
    probe: str
    target: str
    settings: ProbeSettings | None
    target_url: str | None
    window: str
    since: datetime
    until: datetime
    step_s: int
    steps: list[TrendStep]
    totals: Stats
    recent: list[StoredResult]
    marks: list[AlertMark]
    alerts: list[AlertView]
    known: bool = field(default=True)
    # The target's own /metrics per step; None when the target is not scraped (no server charts then).
    server: list[ServerStep] | None = None

    @property
    def truncation_expected(self) -> bool:
        return truncation_expected(self.settings, self.recent[0].endpoint if self.recent else None)

    def to_json(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "target": self.target,
            "target_url": self.target_url,
            "truncation_expected": self.truncation_expected,
            "window": self.window,
            "since": iso(self.since),
            "until": iso(self.until),
            "step_s": self.step_s,
            "totals": self.totals.to_json(),
            "steps": [s.to_json() for s in self.steps],
            "alert_marks": [m.to_json() for m in self.marks],
            "alerts": [a.to_json() for a in self.alerts],
            "recent": [_reply_json(r) for r in self.recent],
            "server": None if self.server is None else [_server_step_json(s) for s in self.server],
        }


def _server_step_json(s: ServerStep) -> dict[str, Any]:
    return {"start": iso(s.start), "scrapes": s.scrapes, "mean": s.mean, "max": s.max}


def _reply_json(r: StoredResult) -> dict[str, Any]:
    # The stored form (`StoredResult.to_json`), plus the reply under `text`, the page's name for it from the start.
    return {**r.to_json(), "text": r.text_sample}


class DashboardData:
    """The pages' read model over a session factory, a store and an alert source it does not own."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        store: Store,
        alerts: AlertsBackend | None = None,
    ) -> None:
        self.settings = settings
        self._sessionmaker = sessionmaker
        self._store = store
        self._alerts = alerts

    async def alerts(self, now: datetime) -> list[AlertView]:
        """Every non-inactive alert, firing first."""
        if self._alerts is not None:
            return list(await self._alerts.alerts())
        async with self._sessionmaker() as session:
            return await alert_repo.alert_views(session, now=now, windows=self.settings.maintenance)

    async def silences(self, now: datetime, *, include_expired: bool = True) -> list[SilenceView]:
        if self._alerts is not None:
            return list(await self._alerts.silences(include_expired=include_expired))
        async with self._sessionmaker() as session:
            return await alert_repo.list_silences(session, now=now, include_expired=include_expired)

    def _probe_keys(self, seen: Sequence[tuple[str, str]]) -> list[tuple[str, str, ProbeSettings | None]]:
        configured = {(p.name, p.target): p for p in self.settings.probes}
        keys: list[tuple[str, str, ProbeSettings | None]] = [(p.name, p.target, p) for p in self.settings.probes]
        keys += sorted((probe, target, None) for probe, target in set(seen) if (probe, target) not in configured)
        return keys

    async def overview(self, now: datetime) -> Overview:
        buckets = await read_overview(
            self._sessionmaker, now, metrics=("latency_ms", "ttft_ms"), spark_steps=SPARK_STEPS,
            last_columns=RESULT_LINE_COLUMNS,
        )  # fmt: skip
        keys = self._probe_keys(list(buckets))
        last = {key: ResultLine.of_columns(b.last) for key, b in buckets.items() if b.last is not None}
        last |= await self._store.last_results([(p, t) for p, t, _ in keys if (p, t) not in last])
        alerts = await self.alerts(now)
        rows: list[OverviewRow] = []
        for probe, target, probe_settings in keys:
            data = buckets.get((probe, target))
            if data is None:
                data = OverviewBuckets(spark_latency_p95_ms=[None] * SPARK_STEPS)
            rows.append(
                OverviewRow(
                    probe=probe, target=target, settings=probe_settings, last=last.get((probe, target)),
                    hour=Stats.of(data.hour), day=Stats.of(data.day), spark_latency_p95_ms=data.spark_latency_p95_ms,
                    alerts=[a for a in alerts if _covers(a, probe, target) and a.state in ("firing", "pending")],
                )
            )  # fmt: skip
        active = [a for a in alerts if a.state in ("firing", "pending")]
        oneshot = await self._store.oneshot_rows(since=now - timedelta(days=1), limit=ONESHOT_ROWS)
        return Overview(generated_at=now, rows=rows, alerts=active, oneshot=oneshot)

    async def default_window(self, probe: str, target: str, now: datetime) -> str:
        """The shortest of `DEFAULT_WINDOWS` that reaches back to the probe's oldest stored result."""
        oldest = await self._store.first_result_at(probe=probe, target=target, source="daemon")
        if oldest is not None:
            span_s = (now - oldest).total_seconds()
            for name in DEFAULT_WINDOWS:
                if span_s <= WINDOWS[name][0]:
                    return name
        return DEFAULT_WINDOWS[-1]

    async def probe_detail(self, probe: str, target: str, window: str, now: datetime) -> ProbeDetail:
        length_s, step_s = WINDOWS[window]
        since = floor_time(now - timedelta(seconds=length_s), step_s) + timedelta(seconds=step_s)
        # The reader and the steps of /api/v1/trend: the charts and the API show the same numbers.
        buckets = await TrendReader(self._sessionmaker).steps(
            since=since, until=now, step_s=step_s, probe=probe, target=target
        )
        steps = [TrendStep.of(start, b) for start, b in buckets.items()]
        recent = await self._store.recent_results(probe=probe, target=target, source="daemon", limit=RECENT_REPLIES)
        alerts = [a for a in await self.alerts(now) if _covers(a, probe, target)]
        marks = await self._alert_marks(probe, target, since, alerts)
        probe_settings = next((p for p in self.settings.probes if p.name == probe and p.target == target), None)
        target_url = next((public_url(t.base_url) for t in self.settings.targets if t.name == target), None)
        known = probe_settings is not None or bool(steps) or bool(recent)
        scraped = any(t.name == target and t.metrics is not None for t in self.settings.targets)
        server = None
        if scraped:
            server = await ServerMetricsStore(self._sessionmaker).steps(target, since=since, until=now, step_s=step_s)
        return ProbeDetail(
            probe=probe,
            target=target,
            settings=probe_settings,
            target_url=target_url,
            window=window,
            since=since,
            until=now,
            step_s=step_s,
            steps=steps,
            totals=Stats.of(Bucket.merged(buckets.values())),
            recent=recent,
            marks=marks,
            alerts=alerts,
            known=known,
            server=server,
        )

    async def _alert_marks(
        self, probe: str, target: str, since: datetime, alerts: Sequence[AlertView]
    ) -> list[AlertMark]:
        """Episodes from the current alert states plus past ones from the notification outbox."""
        marks: dict[tuple[str, int], AlertMark] = {}
        query = (
            select(OutboxRow.rule, OutboxRow.fingerprint, OutboxRow.alert)
            .where(OutboxRow.created_at >= since)
            .order_by(OutboxRow.id.desc())
            .limit(ALERT_HISTORY_ROWS)
        )
        async with self._sessionmaker() as session:
            rows = (await session.execute(query)).all()
        for rule, fp, alert in rows:
            labels = alert.get("labels") or {}
            start = parse_iso(alert.get("started_at"))
            if labels.get("probe") != probe or labels.get("target") != target or start is None:
                continue
            end = parse_iso(alert.get("ended_at"))
            key = (fp, int(start.timestamp()))
            if key not in marks or (end is not None and marks[key].end is None):
                state = "resolved" if end is not None else "firing"
                marks[key] = AlertMark(rule, state, start, end, str(alert.get("severity", "")))
        for a in alerts:
            start = a.fired_at if a.state in ("firing", "resolved") else a.active_since
            if start is None:
                continue
            end = a.resolved_at if a.state == "resolved" else None
            marks[(a.fingerprint, int(start.timestamp()))] = AlertMark(a.rule, a.state, start, end, a.severity)
        return sorted(marks.values(), key=lambda m: m.start)


def _covers(alert: AlertView, probe: str, target: str) -> bool:
    return alert.labels.get("probe") == probe and alert.labels.get("target") == target
