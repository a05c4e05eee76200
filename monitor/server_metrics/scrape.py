"""One scrape of a target's own Prometheus /metrics: `Scraper(session, target, api_key).scrape()`.

The probes' rules for untrusted servers hold here too: the target's headers and API key are sent,
a redirect is reported instead of followed, the body is read only up to `metrics.max_body_bytes`
of *decoded* bytes (aiohttp inflates gzip as it reads, so a gzip bomb stops at the cap), and any
server text in an error goes through `Untrusted` (the API key redacted) and `one_line`.

A scrape never raises for a misbehaving server: every failure is a one-line `error` in the
`ScrapeResult`. The daemon's scrape job and the load runner's per-second scrape both use it; the
`Scraper` is handed its session and never closes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp

from monitor.config import TargetSettings
from monitor.config.deployment import ScrapeSettings
from monitor.envelope import http_error_detail, redirect_detail
from monitor.http_body import read_capped
from monitor.probes import connect_detail, request_headers
from monitor.server_metrics.parse import ExpositionError, ServerSample, parse_exposition
from monitor.untrusted import Untrusted

__all__ = ["NO_METRICS_ENDPOINT", "ScrapeResult", "Scraper"]

logger = logging.getLogger(__name__)

NO_METRICS_ENDPOINT = "the server serves no /metrics (HTTP 404)"
# Parsing a big exposition (a vLLM with many LoRA adapters and label sets) takes milliseconds per
# 100 KB; above this it runs in a worker thread so the probes' clocks on the event loop keep time.
THREAD_PARSE_BYTES = 64 * 1024
# Ask for the classic text format: prometheus_client's servers answer OpenMetrics only when asked.
_ACCEPT = "text/plain;version=0.0.4;q=1.0, */*;q=0.1"


@dataclass(frozen=True, slots=True)
class ScrapeResult:
    """What one scrape gave: a sample, or a one-line `error` (redacted) saying why not."""

    at: datetime  # when the request was sent (UTC)
    sample: ServerSample | None = None
    error: str | None = None
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.sample is not None


class Scraper:
    """Scrapes one target's exposition through a session it does not own."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        target: TargetSettings,
        api_key: str | None,
        settings: ScrapeSettings | None = None,
    ) -> None:
        """`settings` default to the target's `metrics:` (or the defaults when it has none)."""
        self._session = session
        self.target = target
        self._api_key = api_key
        self.settings = settings or target.metrics or ScrapeSettings()
        self.url = self.settings.resolved_url(target.base_url)

    async def scrape(self) -> ScrapeResult:
        at, start_s = datetime.now(UTC), time.monotonic()
        sample, error = await self._scrape(Untrusted(self._api_key))
        return ScrapeResult(at, sample, error, (time.monotonic() - start_s) * 1000.0)

    async def _scrape(self, untrusted: Untrusted) -> tuple[ServerSample | None, str | None]:
        settings, url = self.settings, self.url
        timeout = aiohttp.ClientTimeout(
            total=settings.timeout_s, connect=min(settings.timeout_s, self.target.connect_timeout_s)
        )
        headers = {**request_headers(self.target, self._api_key), "Accept": _ACCEPT}
        headers.pop("Content-Type", None)  # a GET without a body
        try:
            async with self._session.get(url, headers=headers, timeout=timeout, allow_redirects=False) as resp:
                status = resp.status
                if 300 <= status < 400:
                    return None, redirect_detail(status, resp.headers.get("Location"), untrusted)
                raw = await read_capped(resp, settings.max_body_bytes)
        except aiohttp.ClientConnectorError as exc:
            return None, f"cannot reach {url}: {connect_detail(exc, address=False)}"
        except TimeoutError:
            return None, f"no complete answer from {url} within {settings.timeout_s:g} s"
        except aiohttp.ClientError as exc:
            text = untrusted.line(str(exc), 120)
            return None, f"cannot read {url}: {type(exc).__name__}" + (f": {text}" if text else "")
        if raw is None:
            return None, f"the exposition exceeds max_body_bytes={settings.max_body_bytes}"
        if status == 404:
            return None, NO_METRICS_ENDPOINT
        if status != 200:
            return None, http_error_detail(status, raw, untrusted)
        text = raw.decode(errors="replace")
        try:
            if len(raw) > THREAD_PARSE_BYTES:
                sample = await asyncio.to_thread(parse_exposition, text)
            else:
                sample = parse_exposition(text)
        except ExpositionError as exc:
            return None, untrusted.line(str(exc), 200)
        if not sample.sources:
            # Parsed, but nothing we know: a renamed set of metrics, or a page that is not a server's.
            return None, "no known server metric in the exposition (see docs/server-metrics.md for the names read)"
        return sample, None
