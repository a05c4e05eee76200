"""The daemon's scrape of each target's own /metrics (`targets[].metrics`), stored as `server_metrics` rows.

`ServerScrapes` lives as long as the daemon; each leadership term's scheduler gets one interval job
per scraped target from `jobs()` (leader-only, like rollups and retention). A scrape becomes an
interval against the same target's previous scrape, kept in memory: the first scrape after a start
or a takeover has only the gauges (queue depth, KV-cache usage), counters and histograms need two.
A failed scrape is stored too, with its one-line error: a /metrics that stops answering is itself
worth seeing, and the interval after it spans the gap (counters are cumulative). One that failed
while this daemon's own loop stalled (`monitor.loop_lag`) is not stored: it measured the daemon.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import aiohttp

from monitor.config import Settings, TargetSettings
from monitor.loop_lag import LoopLag
from monitor.server_metrics import ServerSample, interval
from monitor.server_metrics.scrape import Scraper, ScrapeResult
from monitor.store.server_metrics_repo import ServerMetricsStore

__all__ = ["ServerScrapes", "job_name"]

logger = logging.getLogger(__name__)

Job = tuple[str, Callable[[], Awaitable[object]], float]  # (job name, job, interval_s): ProbeScheduler.add_periodic


def job_name(target: str) -> str:
    return f"scrape:{target}"


class ServerScrapes:
    """Scrapes targets through a session it does not own and stores each scrape; `on_scrape(target)` follows."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        store: ServerMetricsStore,
        settings: Settings,
        *,
        on_scrape: Callable[[str], Awaitable[object]] | None = None,
        loop_lag: LoopLag | None = None,
    ) -> None:
        self._session = session
        self._loop_lag = loop_lag
        self._store = store
        self._settings = settings
        self._on_scrape = on_scrape
        self._previous: dict[str, tuple[ServerSample, ScrapeResult]] = {}
        self._failing: set[str] = set()
        self.scrapes = 0
        self.failures = 0
        self.stalled = 0  # failed scrapes not stored: this daemon stalled during them

    def jobs(self, targets: Sequence[str] | None = None) -> list[Job]:
        """One interval job per scraped target (or per one of `targets`)."""
        return [
            (job_name(t.name), partial(self.scrape, t.name), t.metrics.interval_s)
            for t in self._settings.targets
            if t.metrics is not None and (targets is None or t.name in targets)
        ]

    def apply(self, settings: Settings) -> list[Job]:
        """Switch to a reloaded config; returns the jobs to (re)schedule: new targets and changed intervals.

        A target that lost `metrics:` (or left the config) keeps its job, which then does nothing.
        """
        old = {t.name: t.metrics for t in self._settings.targets}
        self._settings = settings
        changed = [t.name for t in settings.targets if t.metrics is not None and old.get(t.name) != t.metrics]
        for name in changed:
            self._previous.pop(name, None)  # another URL may be another server
        return self.jobs(changed)

    def _target(self, name: str) -> TargetSettings | None:
        return next((t for t in self._settings.targets if t.name == name and t.metrics is not None), None)

    async def scrape(self, name: str) -> ScrapeResult | None:
        """Scrape `name` once and store the row; None when it is no longer scraped (a reload removed it)."""
        target = self._target(name)
        if target is None:
            return None
        start_s = time.monotonic()
        result = await Scraper(self._session, target, self._settings.api_key(name)).scrape()
        if result.sample is None and self._loop_lag is not None:
            stall_s = self._loop_lag.voids(start_s, time.monotonic() - start_s)
            if stall_s is not None:
                self.stalled += 1
                logger.warning(
                    "scrape %s: this daemon's event loop stalled %.1f s during the scrape; its failure (%s) "
                    "is not recorded", name, stall_s, result.error,
                )  # fmt: skip
                return result
        self.scrapes += 1
        if result.sample is None:
            self.failures += 1
            await self._store.add(name, result.at, values=None, error=result.error)
            self._note_failure(name, result.error)
        else:
            previous = self._previous.get(name)
            elapsed_s = (result.at - previous[1].at).total_seconds() if previous is not None else None
            values = interval(previous[0] if previous is not None else None, result.sample, elapsed_s or 0.0)
            self._previous[name] = (result.sample, result)
            await self._store.add(
                name, result.at, values=values, interval_s=elapsed_s, sources=dict(result.sample.sources)
            )
            if name in self._failing:
                self._failing.discard(name)
                logger.info("scrape %s: /metrics answers again", name)
        if self._on_scrape is not None:
            await self._on_scrape(name)
        return result

    def _note_failure(self, name: str, error: str | None) -> None:
        # One line when a target's scrapes start failing, not one every interval.
        if name not in self._failing:
            self._failing.add(name)
            logger.warning("scrape %s failed: %s", name, error)
