"""One-shot probing: `llm-monitor probe` and the demo. Owns its session and engine for one run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import AsyncExitStack

from monitor.config import ProbeSettings, Settings
from monitor.probes import Prober
from monitor.results import ProbeResult
from monitor.store.db import connect, ensure_schema
from monitor.store.repo import Store
from monitor.target_http import target_session

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 4


async def probe_once(
    settings: Settings, probes: Sequence[ProbeSettings] | None = None, *, concurrency: int = DEFAULT_CONCURRENCY
) -> list[ProbeResult]:
    """Fire every probe once, store the results, return them in config order.

    The database is reached (and migrated if empty) before any request, so a bad storage URL fails
    fast instead of after the probes ran. The results are stored as source `probe`: the daemon's
    trends, alerts and dashboard leave them out, although they carry its probe names.
    """
    chosen = list(settings.probes if probes is None else probes)
    async with AsyncExitStack() as stack:
        engine = await connect(settings.storage.url)
        stack.push_async_callback(engine.dispose)
        await ensure_schema(engine)
        session = target_session()
        stack.push_async_callback(session.close)
        results = await run_probes(Prober(session), settings, chosen, concurrency=concurrency)
        await Store.from_engine(engine).add_results(results, source="probe")
        return results


async def run_probes(
    prober: Prober, settings: Settings, probes: Sequence[ProbeSettings], *, concurrency: int
) -> list[ProbeResult]:
    limit = asyncio.Semaphore(max(1, concurrency))

    async def one(probe: ProbeSettings) -> ProbeResult:
        async with limit:
            target = settings.target(probe.target)
            result = await prober.run(target, probe, settings.api_key(target.name))
            logger.info("probe %s: %s", probe.name, "ok" if result.ok else result.error_kind or "check failed")
            return result

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(one(p)) for p in probes]
    return [t.result() for t in tasks]
