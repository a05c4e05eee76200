"""Reads the JSONL stream the Locust master writes (``--llm-out``) and records it in the database.

``RunData`` is the in-memory picture of a run: windows per (second, endpoint), users per second,
warnings and the final summary line. ``EventTail`` reads whatever lines were appended since the
last call. ``Recorder`` ties them to a ``LoadStore``: new or grown seconds are written as
``load_series`` rows, and the run's heartbeat is refreshed with every flush.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monitor.loadtest.repo import LoadStore, SeriesPoint
from monitor.loadtest.server_values import ServerSeconds
from monitor.loadtest.slo_metrics import metric_value
from monitor.loadtest.window import Window

__all__ = ["EventTail", "Recorder", "RunData"]

logger = logging.getLogger(__name__)


@dataclass
class RunData:
    """Everything the Locust side reported so far."""

    t0: float | None = None
    seconds: dict[int, dict[str, Window]] = field(default_factory=dict)
    users: dict[int, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    complete_before: float = 0.0  # epoch seconds before this are final (bar late worker reports)
    dirty: set[int] = field(default_factory=set)
    server: ServerSeconds = field(default_factory=ServerSeconds)  # the runner's scrapes of the server's /metrics

    def apply(self, line: dict[str, Any]) -> None:
        kind = line.get("type")
        if kind == "start":
            self.t0 = float(line["t0"])
        elif kind == "second":
            t = int(line["t"])
            endpoints = self.seconds.setdefault(t, {})
            for endpoint, raw in (line.get("endpoints") or {}).items():
                window = Window.from_json(raw)
                if endpoint in endpoints:
                    endpoints[endpoint].merge(window)
                else:
                    endpoints[endpoint] = window
            if line.get("users") is not None and t not in self.users:
                self.users[t] = int(line["users"])
            self.dirty.add(t)
        elif kind == "tick":
            self.complete_before = max(self.complete_before, float(line["before"]))
        elif kind == "warning":
            self.warnings.append(str(line.get("message", "")))
        elif kind == "summary":
            self.summary = line

    @property
    def first_s(self) -> int | None:
        if self.t0 is not None:
            return int(self.t0)
        return min(self.seconds) if self.seconds else None

    def endpoints(self) -> list[str]:
        return sorted({ep for eps in self.seconds.values() for ep in eps})

    def window(self, start_s: float | None = None, end_s: float | None = None, endpoint: str | None = None) -> Window:
        """Merged windows of the epoch seconds in [start_s, end_s), one endpoint or all."""
        return Window.merged(
            w
            for t, eps in self.seconds.items()
            if (start_s is None or t >= start_s) and (end_s is None or t < end_s)
            for ep, w in eps.items()
            if endpoint is None or ep == endpoint
        )

    def last_second(self) -> int | None:
        return max(self.seconds) if self.seconds else None

    def point(self, t: int) -> SeriesPoint:
        window = self.window(t, t + 1)
        first = self.first_s if self.first_s is not None else t

        def value(name: str) -> float | None:
            v = metric_value(name, window, 1.0)
            return None if v is None else round(v, 3)

        return SeriesPoint(
            t_s=t - first, ts=datetime.fromtimestamp(t, UTC), users=self.users.get(t), requests=window.requests,
            failures=window.failures, sent=window.sent, output_tokens=window.output_tokens,
            truncated=window.truncated, ttft_p50_ms=value("ttft_p50_ms"), ttft_p95_ms=value("ttft_p95_ms"),
            itl_p50_ms=value("itl_p50_ms"), itl_p95_ms=value("itl_p95_ms"), e2e_p50_ms=value("e2e_p50_ms"),
            e2e_p95_ms=value("e2e_p95_ms"), lag_p95_ms=value("lag_p95_ms"), errors=dict(window.errors),
            ttfa_p50_ms=value("ttfa_p50_ms"), ttfa_p95_ms=value("ttfa_p95_ms"),
            reasoning_tokens=window.reasoning_tokens, good=window.good, goodput_judged=window.goodput_judged,
            read_lag_p99_ms=value("read_lag_p99_ms"), ttft_err_p99_ms=value("ttft_err_p99_ms"),
            server=self.server.point(t),
        )  # fmt: skip

    def points(self, seconds: Iterable[int] | None = None) -> list[SeriesPoint]:
        return [self.point(t) for t in sorted(self.seconds if seconds is None else seconds)]


class EventTail:
    """Returns the complete lines appended to a JSONL file since the previous call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        out = []
        for raw in lines:
            if not raw.strip():
                continue
            try:
                out.append(json.loads(raw))
            except ValueError:
                logger.warning("skipping a malformed line in %s: %.80r", self.path, raw)
        return out


class Recorder:
    """Moves new lines into ``RunData`` and dirty seconds into the database (master side only)."""

    def __init__(self, store: LoadStore, run_id: int, data: RunData, tail: EventTail) -> None:
        self.store = store
        self.run_id = run_id
        self.data = data
        self.tail = tail

    def poll(self) -> int:
        """Apply the lines written since the last poll; returns how many there were."""
        lines = self.tail.read_new()
        for line in lines:
            self.data.apply(line)
        return len(lines)

    async def flush(self) -> None:
        dirty = sorted(self.data.dirty)
        self.data.dirty.clear()
        if dirty:
            await self.store.save_series(self.run_id, self.data.points(dirty))
        await self.store.heartbeat(self.run_id, datetime.now(UTC))
