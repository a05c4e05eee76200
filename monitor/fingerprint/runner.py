"""One fingerprint run of one target: collect, store, compare with the accepted baseline, observe.

The first reading of a component becomes its baseline (so does a `not_served` one: a component the
server never served is not an alarm, its appearing later is). A component whose request failed for
a passing reason (timeout, refused connection, 5xx) is stored as `error` and SKIPPED for that run:
no observation at all, so it neither raises a false drift nor resolves a real one that is firing.
"""

from __future__ import annotations

import logging
from datetime import datetime

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.config import TargetSettings
from monitor.config.deployment import FingerprintSettings
from monitor.deployment import DeploymentObservation
from monitor.doctor.client import DoctorClient
from monitor.fingerprint.collect import Reading, collect
from monitor.fingerprint.compare import digest, judge
from monitor.store.fingerprint_repo import FingerprintStore, StoredReading
from monitor.untrusted import one_line

__all__ = ["FIRST_FINGERPRINT", "Fingerprinter", "observe"]

logger = logging.getLogger(__name__)

FIRST_FINGERPRINT = "first fingerprint"  # accepted_by of a baseline nobody accepted by hand
_SUMMARY_CHARS = 300


class Fingerprinter:
    """Records fingerprints of targets and judges them against their baselines."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], http: aiohttp.ClientSession) -> None:
        self.store = FingerprintStore(sessionmaker)
        self._http = http

    async def run(
        self, target: TargetSettings, settings: FingerprintSettings, api_key: str | None, *, now: datetime
    ) -> list[DeploymentObservation]:
        if not settings.enabled:
            return []
        readings = await collect(DoctorClient(self._http, target, api_key), settings)
        await self.store.record(
            target.name, now, [(r.component, r.status, r.value, digest(r.status, r.value), r.error) for r in readings]
        )
        baselines = await self.store.baselines(target.name)
        for r in readings:
            if r.status != "error" and r.component not in baselines:
                first = StoredReading(target.name, r.component, r.status, r.value, digest(r.status, r.value), now)
                await self.store.set_baseline(first, accepted_at=now, accepted_by=FIRST_FINGERPRINT)
                baselines[r.component] = first
        observations = observe(target.name, readings, baselines, settings, now=now)
        drifted = [o.key for o in observations if o.active]
        logger.info("fingerprint %s: %d components, drifted %s", target.name, len(readings), drifted or "none")
        return observations

    async def accept(self, target: str, components: list[str] | None, *, by: str, now: datetime) -> list[str]:
        """Make the latest reading of `components` (None: every one read) the baseline; the ones accepted."""
        chosen = await self.store.accept_latest(target, components, by=by, now=now)
        logger.info("fingerprint %s: %s accepted by %s", target, chosen, by)
        return chosen


def observe(
    target: str,
    readings: list[Reading],
    baselines: dict[str, StoredReading],
    settings: FingerprintSettings,
    *,
    now: datetime,
) -> list[DeploymentObservation]:
    """One `drift` observation per component read this run and having a baseline (pure)."""
    out = []
    for r in readings:
        base = baselines.get(r.component)
        if r.status == "error" or base is None:
            continue
        verdict = judge(
            r.component, (base.status, base.value), (r.status, r.value),
            metric=settings.logprob_metric, threshold=settings.logprob_threshold,
        )  # fmt: skip
        if verdict.changed:
            since = f"{base.at:%Y-%m-%d %H:%M} UTC"
            summary = f"{r.component} drifted from the baseline of {since}: {verdict.before} → {verdict.after}"
        else:
            summary = f"{r.component} matches the baseline"
        if verdict.detail:
            summary += f" ({verdict.detail})"
        out.append(
            DeploymentObservation(
                kind="drift",
                target=target,
                key=r.component,
                active=verdict.changed,
                at=now,
                summary=one_line(summary, _SUMMARY_CHARS),
                before=verdict.before,
                after=verdict.after,
                fix=None
                if not verdict.changed
                else (
                    "If the change was intended (an upgrade), accept it: "
                    f"llm-monitor fingerprint accept --target {target} --component {r.component}"
                ),
            )  # fmt: skip
        )
    return out
