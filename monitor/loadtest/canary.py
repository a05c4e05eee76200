"""Canaries under load: the config's probes, fired periodically while the load runs, stored with the run id.

They answer "does the service still answer *correctly* under this load?", which latency numbers
alone do not. This runs on the runner's asyncio side, never inside the Locust process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import aiohttp

from monitor.config import ProbeSettings, TargetSettings
from monitor.probes import Prober
from monitor.results import ProbeResult
from monitor.store import Store
from monitor.target_http import target_session

__all__ = ["run_canaries"]

logger = logging.getLogger(__name__)


async def run_canaries(
    target: TargetSettings,
    probes: Sequence[ProbeSettings],
    api_key: str | None,
    store: Store,
    run_id: int,
    interval_s: float,
    stop: asyncio.Event,
) -> list[ProbeResult]:
    """Fire every probe once per ``interval_s`` until ``stop`` is set; returns what was stored."""
    results: list[ProbeResult] = []
    if not probes:
        return results
    timeout = aiohttp.ClientTimeout(total=None, connect=target.connect_timeout_s)
    async with target_session(timeout=timeout) as session:
        prober = Prober(session)
        while not stop.is_set():
            batch = await asyncio.gather(*(prober.run(target, probe, api_key) for probe in probes))
            await store.add_results(batch, load_run_id=run_id)
            results.extend(batch)
            failed = [r for r in batch if not r.ok]
            if failed:
                logger.info("canary %s failed under load: %s", failed[0].probe, failed[0].error_detail)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await stop.wait()
    return results
