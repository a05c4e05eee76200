"""The load run's per-second scrape of the target's own /metrics (queue depth, KV cache, server TTFT).

Like AIPerf, a load run scrapes by default: the target's `metrics:` URL when it has one, else the
origin of its base_url + /metrics, where vLLM, SGLang and llama-server (with `--metrics`) serve it.
`--no-server-metrics` turns it off. The scrape runs in the runner's event loop, never in a Locust
user, just after each whole second, one at a time (a slow scrape skips seconds, it never piles up).

A server without /metrics costs one request: a 404, or a page with no metric we know, stops the
scrape and the report says "not exposed". Any other failure (a timeout, a 500) is counted and the
next second tries again, up to `GIVE_UP_AFTER` failures in a row. Every scrape that gave values
is a `server_metrics` row with the run's id and the metric names it was read from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

import aiohttp

from monitor.config import TargetSettings
from monitor.config.deployment import ScrapeSettings
from monitor.loadtest.server_values import ServerSeconds
from monitor.server_metrics import ServerSample, interval
from monitor.server_metrics.scrape import NO_METRICS_ENDPOINT, Scraper
from monitor.store.server_metrics_repo import ServerMetricsStore

__all__ = ["GIVE_UP_AFTER", "RunScrapes", "ServerStatus", "off_summary"]

logger = logging.getLogger(__name__)

ServerStatus = Literal["off", "measured", "not exposed", "failed"]
GIVE_UP_AFTER = 10
ERROR_MAX_CHARS = 300
# A scrape slower than this would blur the second it describes; the next second tries again.
SCRAPE_TIMEOUT_S = 2.0
# After the whole second: the Locust master's per-second report is written then too.
OFFSET_S = 0.05
_NOT_EXPOSED_PREFIXES = (NO_METRICS_ENDPOINT, "no known server metric")


class RunScrapes:
    """Scrapes one target every second into `seconds` and the store, until `stop` is set."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        target: TargetSettings,
        api_key: str | None,
        store: ServerMetricsStore,
        run_id: int,
        seconds: ServerSeconds,
    ) -> None:
        base = target.metrics or ScrapeSettings()
        settings = base.model_copy(update={"timeout_s": min(base.timeout_s, SCRAPE_TIMEOUT_S)})
        self._scraper = Scraper(session, target, api_key, settings)
        self._store = store
        self._run_id = run_id
        self._target = target.name
        self.seconds = seconds
        self.status: ServerStatus = "failed"
        self.error: str | None = None
        self.scrapes = self.failures = 0
        self.sources: dict[str, str] = {}
        self._previous: tuple[float, ServerSample] | None = None

    @property
    def url(self) -> str:
        return self._scraper.url

    async def run(self, stop: asyncio.Event) -> None:
        failing = 0
        while not stop.is_set():
            delay_s = 1.0 - time.time() % 1.0 + OFFSET_S
            try:
                async with asyncio.timeout(delay_s):
                    await stop.wait()
                return
            except TimeoutError:
                pass
            if await self.scrape_once():
                failing = 0
                continue
            if self.status == "not exposed":
                logger.info("server metrics: %s (%s); not scraping during this run", self.error, self.url)
                return
            failing += 1
            if failing >= GIVE_UP_AFTER:
                logger.warning("server metrics: %d scrapes of %s failed in a row (%s); giving up",
                               failing, self.url, self.error)  # fmt: skip
                return

    async def scrape_once(self) -> bool:
        """One scrape, stored; False when it gave nothing (`error` says why)."""
        result = await self._scraper.scrape()
        self.scrapes += 1
        if result.sample is None:
            self.failures += 1
            self.error = (result.error or "")[:ERROR_MAX_CHARS]
            if self.status != "measured" and (result.error or "").startswith(_NOT_EXPOSED_PREFIXES):
                self.status = "not exposed"
            return False
        at_s = result.at.timestamp()
        elapsed_s = at_s - self._previous[0] if self._previous is not None else None
        values = interval(self._previous[1] if self._previous is not None else None, result.sample, elapsed_s or 0.0)
        self._previous = (at_s, result.sample)
        self.status = "measured"
        self.sources.update(result.sample.sources)
        self.seconds.add(result.at, result.sample, values)
        await self._store.add(
            self._target, result.at, values=values, interval_s=elapsed_s, sources=dict(result.sample.sources),
            load_run_id=self._run_id,
        )  # fmt: skip
        return True

    def summary(self) -> dict[str, Any]:
        """The run summary's `server` entry: where the values came from, or why there are none."""
        values = self.seconds.values() if self.status == "measured" else {}
        names = sorted(set(self.sources.values()))
        return {
            "status": self.status,
            "url": self.url,
            "source": self._source(names),
            "scrapes": self.scrapes,
            "failures": self.failures,
            "sources": dict(sorted(self.sources.items())),
            "metrics": {name: None if v is None else round(v, 6) for name, v in values.items()},
        }

    def _source(self, names: list[str]) -> str:
        if self.status == "measured":
            return "measured from the server's /metrics (" + ", ".join(names) + ")"
        if self.status == "not exposed":
            return f"not exposed: {self.error}"
        if not self.scrapes:
            return "not scraped: the run ended before the first scrape"
        return f"scrapes failed: {self.error}"


def off_summary() -> dict[str, Any]:
    """The `server` entry of a run with --no-server-metrics."""
    return {"status": "off", "url": None, "source": "not scraped (--no-server-metrics)", "scrapes": 0,
            "failures": 0, "sources": {}, "metrics": {}}  # fmt: skip
