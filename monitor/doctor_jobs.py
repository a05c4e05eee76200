"""The scheduled doctor (`targets[].doctor`): one leader-only job per target, each run stored and judged.

`DoctorJobs` lives as long as the daemon; each leadership term's scheduler gets one job per target
with `doctor:` from `jobs()`. A run sends the configured checks (`doctor.checks`, see
`monitor.doctor.runner.diagnose`), stores the requests' results (source `doctor`, as the one-shot
CLI does) and the report (`doctor_runs`/`doctor_findings`), then records the fingerprint when
`doctor.fingerprint.enabled`, and tells the alert engine one `DeploymentObservation` per check.

A check is *worse* (the observation is active) when its verdict ranks above its reference verdict
(skip < pass < warn < fail). The reference is the verdict of the latest stored run in which the
check was not worse and not skipped: the first run sets it, a recovery resets it, and it survives a
restart because it is read back from the store. A run that cannot reach the server is stored with
its error and tells the engine nothing: the alerts keep their state until the server answers
(an unreachable server is the probes' alert, not a deployment change).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from functools import partial
from typing import cast

import aiohttp
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.alerts.deployment import DeploymentSink
from monitor.clock import Clock, SystemClock
from monitor.config import Settings, TargetSettings
from monitor.config.deployment import DoctorSchedule
from monitor.deployment import DeploymentObservation, fold
from monitor.doctor.client import DoctorClient
from monitor.doctor.findings import Finding, Status, worst
from monitor.doctor.runner import diagnose
from monitor.errors import ProbeError
from monitor.fingerprint.runner import Fingerprinter
from monitor.loop_lag import LoopLag
from monitor.scheduler import spread_start
from monitor.store.doctor_repo import DoctorRun, DoctorStore, StoredFinding
from monitor.store.repo import Store
from monitor.untrusted import Untrusted, one_line

__all__ = ["DoctorJobs", "build_doctor_trigger", "job_name", "worse"]

logger = logging.getLogger(__name__)

# (job name, job, interval_s, trigger): ProbeScheduler.add_periodic; interval_s bounds the misfire grace.
Job = tuple[str, Callable[[], Awaitable[object]], float, BaseTrigger]


def job_name(target: str) -> str:
    return f"doctor:{target}"


def build_doctor_trigger(schedule: DoctorSchedule, name: str = "doctor") -> BaseTrigger:
    """Its `cron` (UTC) if given, else every `interval_s` from soon after start; `jitter_s` on either."""
    jitter = int(schedule.jitter_s) or None
    if schedule.cron is not None:
        trigger = CronTrigger.from_crontab(schedule.cron, timezone="UTC")
        trigger.jitter = jitter
        return trigger
    # The first run comes soon after start, not one interval later (a new deployment is checked at once).
    start = spread_start(name, schedule.interval_s)
    return IntervalTrigger(seconds=schedule.interval_s, start_date=start, jitter=jitter, timezone="UTC")


def worse(status: str, reference: str | None) -> bool:
    """A verdict worse than its reference; a skip never is, and no reference yet means not worse."""
    if reference is None or status == "skip":
        return False
    return status != reference and worst(cast(Status, status), cast(Status, reference)) == status


class DoctorJobs:
    """Runs the doctor on schedule through an HTTP session it does not own; `run_now(target)` runs it once."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        sink: DeploymentSink | None,
        clock: Clock | None = None,
        loop_lag: LoopLag | None = None,
    ) -> None:
        self._session = session
        self._loop_lag = loop_lag
        self.store = DoctorStore(sessionmaker)
        self._results = Store(sessionmaker)
        self._fingerprinter = Fingerprinter(sessionmaker, session)
        self._settings = settings
        self._sink = sink
        self._clock = clock or SystemClock()
        self.runs = 0
        self.errors = 0

    def jobs(self, targets: Sequence[str] | None = None) -> list[Job]:
        """One job per target with `doctor:` (or per one of `targets`)."""
        return [
            (
                job_name(t.name),
                partial(self.run_now, t.name),
                t.doctor.interval_s,
                build_doctor_trigger(t.doctor, job_name(t.name)),
            )
            for t in self._settings.targets
            if t.doctor is not None and (targets is None or t.name in targets)
        ]

    def apply(self, settings: Settings) -> list[Job]:
        """Switch to a reloaded config; the jobs to (re)schedule: new targets and changed `doctor:` settings.

        A target that lost `doctor:` (or left the config) keeps its job, which then does nothing.
        """
        old = {t.name: t.doctor for t in self._settings.targets}
        self._settings = settings
        return self.jobs([t.name for t in settings.targets if t.doctor is not None and old.get(t.name) != t.doctor])

    def _target(self, name: str) -> TargetSettings | None:
        return next((t for t in self._settings.targets if t.name == name and t.doctor is not None), None)

    async def run_now(self, name: str) -> DoctorRun | None:
        """One run against `name`: stored, judged and told to the sink; None when it has no `doctor:` any more."""
        target = self._target(name)
        if target is None or target.doctor is None:
            return None
        api_key = self._settings.api_key(name)
        for attempt in (1, 2):
            started_at, started = self._clock.now(), time.monotonic()
            client = DoctorClient(self._session, target, api_key)
            failure = None
            try:
                report = await diagnose(client, target.doctor.effective_checks)
            except ProbeError as exc:
                failure = one_line(Untrusted(api_key).text(str(exc)))
            finally:
                await self._results.add_results(client.results, source="doctor")
            stall_s = self._loop_lag.voids(started, target.timeout_s) if self._loop_lag is not None else None
            if stall_s is None:
                break
            # Its requests' deadlines passed while this daemon could not run: verdicts (or the failure to
            # reach the target at all) are about the daemon, not the target. Run again at once, as a probe is.
            if attempt == 1:
                logger.warning("doctor %s: this daemon's event loop stalled %.1f s during the run; running it again",
                               name, stall_s)  # fmt: skip
                continue
            return await self._error_run(name, started_at, f"this daemon's event loop stalled {stall_s:.1f} s")
        if failure is not None:
            return await self._error_run(name, started_at, failure)
        references = await self.store.references(name)
        findings = [_stored(f, references.get(f.id), api_key) for f in report.findings]
        finished_at = self._clock.now()
        run_id = await self.store.add(
            name, started_at=started_at, finished_at=finished_at, model=report.model,
            max_model_len=report.max_model_len, exit_code=report.exit_code, findings=findings,
        )  # fmt: skip
        self.runs += 1
        observations = [_observation(name, f, references.get(f.check_id), finished_at) for f in findings]
        if target.doctor.fingerprint.enabled:
            observations += await self._fingerprinter.run(target, target.doctor.fingerprint, api_key, now=finished_at)
        if self._sink is not None:
            await self._sink.on_deployment(fold(observations))
        logger.info(
            "doctor %s: %d checks in %.1f s, %d fail, %d warn, worse: %s", name, len(findings),
            time.monotonic() - started, report.count("fail"), report.count("warn"),
            [f.check_id for f in findings if f.active] or "none",
        )  # fmt: skip
        return DoctorRun(
            run_id, name, started_at, finished_at, report.model, report.max_model_len, report.exit_code, None,
            tuple(findings),
        )  # fmt: skip

    async def _error_run(self, name: str, started_at: datetime, error: str) -> DoctorRun:
        """A run that produced no verdicts: stored with its reason (exit code 2), judged against nothing."""
        self.runs += 1
        self.errors += 1
        finished_at = self._clock.now()
        run_id = await self.store.add(name, started_at=started_at, finished_at=finished_at, exit_code=2, error=error)
        logger.warning("doctor %s: no verdicts: %s", name, error)
        return DoctorRun(run_id, name, started_at, finished_at, None, None, 2, error)


def _stored(finding: Finding, reference: str | None, api_key: str | None) -> StoredFinding:
    # Findings quote the server; clean them once here, before they are stored or sent anywhere.
    clean = Untrusted(api_key).text
    return StoredFinding(
        finding.id, finding.status, worse(finding.status, reference), one_line(clean(finding.summary)),
        None if finding.fix is None else clean(finding.fix), one_line(clean(finding.request)),
        one_line(clean(finding.response_excerpt)), tuple(one_line(clean(d)) for d in finding.details),
    )  # fmt: skip


def _observation(target: str, f: StoredFinding, reference: str | None, at: datetime) -> DeploymentObservation:
    after = "pass" if f.status == "pass" else f"{f.status}: {f.summary}"
    return DeploymentObservation(
        kind="doctor", target=target, key=f.check_id, active=f.active, at=at,
        summary=f.summary, before=reference or "", after=one_line(after), fix=f.fix,
    )  # fmt: skip
