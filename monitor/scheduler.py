"""APScheduler wiring: config -> probe jobs, each run handed to the result writer.

Each probe is an APScheduler 3.x job on an `AsyncIOScheduler` (interval or cron, jitter,
`max_instances=1`, coalescing, misfire grace). Every run is its own task, bounded by the target's
timeout and a concurrency semaphore, so a hung target only ever holds its own slot: other probes
keep their schedule. Results go to the one `monitor.store.writer.ResultWriter`, whose bounded queue
makes a slow database slow probing down instead of growing memory.

A run during which this daemon's own event loop stalled (`monitor.loop_lag`) measured the daemon,
not the target: it is run once more, and a second stalled run is not recorded (counted as skipped,
reason `stalled`). A starved monitor must not raise the target's alerts.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING, STATE_STOPPED
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import SQLAlchemyError

from monitor.config import ProbeSettings, Settings
from monitor.errors import StoreError
from monitor.exposition import ProbeMetrics
from monitor.loop_lag import LoopLag
from monitor.probes import Prober, timeout_result
from monitor.results import ProbeResult
from monitor.store.db import describe_error
from monitor.store.writer import ResultWriter
from monitor.tasks import wait_then_cancel

__all__ = ["ProbeScheduler", "SchedulerStats", "build_trigger"]

logger = logging.getLogger(__name__)
# A probe that runs longer than its interval skips a start every interval: one line per probe now and
# then says so (every skip is counted in llm_monitor_probe_runs_skipped_total), not one per skip.
SKIP_LOG_EVERY_S = 600.0


class _ProbeSkipsFilter(logging.Filter):
    """Drops APScheduler's per-run warnings for probe jobs: the scheduler logs them, rate-limited."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            ' of job "probe:' in message
            and ("maximum number of running instances" in message or "was missed by" in message)
        )


_PROBE_SKIPS_FILTER = _ProbeSkipsFilter()

# The prober enforces the target timeout itself; this outer bound only guards against a bug there.
TIMEOUT_SLACK_S = 5.0
# First runs of interval probes are spread over at most this long (or one interval), so a config of
# many probes with equal intervals does not fire all of them in the same instant.
SPREAD_MAX_S = 60.0
LATENESS_SAMPLES = 10_000


def _job_id(probe: str) -> str:
    return f"probe:{probe}"


def build_trigger(probe: ProbeSettings, *, now: datetime | None = None) -> IntervalTrigger | CronTrigger:
    """The APScheduler trigger for a probe: its `cron` (UTC) if given, else every `interval_s`.

    Raises ValueError for an invalid crontab. Cron weekdays follow APScheduler 3 (0 = Monday);
    names (mon-sun) mean the same everywhere.
    """
    jitter = probe.jitter_s or None
    if probe.cron is not None:
        trigger = CronTrigger.from_crontab(probe.cron, timezone=UTC)
        trigger.jitter = jitter
        return trigger
    start = spread_start(probe.name, probe.interval_s, now)
    return IntervalTrigger(seconds=probe.interval_s, start_date=start, jitter=jitter, timezone=UTC)


def spread_start(name: str, interval_s: float, now: datetime | None = None) -> datetime:
    """When an interval job first runs: soon after start (within SPREAD_MAX_S), at a stable per-name offset,
    so jobs do not all fire at once and the same job starts at the same phase after every restart."""
    spread_s = min(interval_s, SPREAD_MAX_S) * (zlib.crc32(name.encode()) % 1000) / 1000
    return (now or datetime.now(UTC)) + timedelta(seconds=spread_s)


def _whole_s(seconds: float) -> int:
    # APScheduler 3 only takes whole seconds of misfire grace.
    return max(1, math.ceil(seconds))


def _schedule_key(probe: ProbeSettings) -> tuple[object, ...]:
    return (probe.cron, probe.interval_s, probe.jitter_s)


@dataclass(slots=True)
class SchedulerStats:
    runs: int = 0
    ok: int = 0
    failed: int = 0
    skipped_busy: int = 0
    missed: int = 0
    cancelled: int = 0
    stalled: int = 0  # runs voided because this daemon's loop stalled during them


class ProbeScheduler:
    """Owns the AsyncIOScheduler (created in `start`, inside the running loop) and the probe runs."""

    def __init__(
        self,
        settings: Settings,
        *,
        prober: Prober,
        writer: ResultWriter,
        metrics: ProbeMetrics,
        loop_lag: LoopLag | None = None,
    ) -> None:
        self._settings = settings
        self._loop_lag = loop_lag
        self._probes = {p.name: p for p in settings.probes}
        self._prober = prober
        self._writer = writer
        self._metrics = metrics
        self._limit = asyncio.Semaphore(settings.daemon.max_concurrent_probes)
        self._scheduler: AsyncIOScheduler | None = None
        self._scheduled_at: dict[str, datetime] = {}
        self._inflight: set[asyncio.Task[Any]] = set()
        self._draining = False  # set by drain() just before it cancels what is left
        self.stats = SchedulerStats()
        self.lateness_s: deque[float] = deque(maxlen=LATENESS_SAMPLES)
        # Per probe and reason (busy, missed): (monotonic time of the last line logged, skips not yet logged).
        self._skips: dict[tuple[str, str], tuple[float | None, int]] = {}

    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.state == STATE_RUNNING

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def next_runs(self) -> dict[str, datetime | None]:
        """Each probe's next scheduled start (None while paused)."""
        if self._scheduler is None:
            return {}
        return {
            job.id.removeprefix("probe:"): job.next_run_time
            for job in self._scheduler.get_jobs()
            if job.id.startswith("probe:")
        }

    def start(self) -> None:
        logging.getLogger("apscheduler.scheduler").addFilter(_PROBE_SKIPS_FILTER)  # added once, however often
        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.add_listener(self._on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self._scheduler = scheduler
        now = datetime.now(UTC)
        for probe in self._probes.values():
            self._add_probe_job(probe, now)
        scheduler.start()
        logger.info("scheduled %d probes", len(self._probes))

    def _add_probe_job(self, probe: ProbeSettings, now: datetime) -> None:
        assert self._scheduler is not None
        self._scheduler.add_job(
            self._run_probe, build_trigger(probe, now=now), args=(probe.name,), id=_job_id(probe.name),
            name=_job_id(probe.name), max_instances=1, coalesce=True,
            misfire_grace_time=_whole_s(self._settings.daemon.misfire_grace_s), replace_existing=True,
        )  # fmt: skip

    def add_periodic(
        self, name: str, func: Callable[[], Awaitable[object]], interval_s: float, *, trigger: BaseTrigger | None = None
    ) -> None:
        """A maintenance job (rollups, retention, absence checks) every `interval_s`, never overlapping itself.

        `trigger` replaces the interval (a cron); `interval_s` then still bounds the misfire grace.
        """
        assert self._scheduler is not None

        async def guarded() -> None:
            task = asyncio.current_task()
            assert task is not None
            self._inflight.add(task)
            try:
                await func()
            except (StoreError, SQLAlchemyError, OSError) as exc:
                # A database outage is expected to happen: one line per run, not a traceback.
                logger.error("%s job failed: %s", name, exc if isinstance(exc, StoreError) else describe_error(exc))
            except Exception:  # a job must not kill the scheduler
                logger.exception("%s job failed", name)
            finally:
                self._inflight.discard(task)

        trigger = trigger or IntervalTrigger(seconds=interval_s, timezone=UTC)
        self._scheduler.add_job(
            guarded, trigger, id=name, name=name, max_instances=1, coalesce=True,
            misfire_grace_time=_whole_s(interval_s), replace_existing=True,
        )  # fmt: skip

    def apply(self, settings: Settings) -> None:
        """Switch to a new config: add, remove and reschedule probe jobs; unchanged schedules keep their phase."""
        assert self._scheduler is not None
        new = {p.name: p for p in settings.probes}
        now = datetime.now(UTC)
        for name in self._probes.keys() - new.keys():
            self._scheduler.remove_job(_job_id(name))
        for name, probe in new.items():
            old = self._probes.get(name)
            if old is None or _schedule_key(old) != _schedule_key(probe):
                self._add_probe_job(probe, now)
        self._settings = settings
        self._probes = new

    def _on_event(self, event: JobSubmissionEvent | JobExecutionEvent) -> None:
        if not event.job_id.startswith("probe:"):
            return
        probe = event.job_id.removeprefix("probe:")
        if event.code == EVENT_JOB_SUBMITTED:
            assert isinstance(event, JobSubmissionEvent)
            # With coalescing there is exactly one run time per submission.
            self._scheduled_at[event.job_id] = event.scheduled_run_times[-1]
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            self.stats.skipped_busy += 1
            self._metrics.skipped.inc((probe, "busy"))
            self._log_skip(probe, "busy")
        elif event.code == EVENT_JOB_MISSED:
            self.stats.missed += 1
            self._metrics.skipped.inc((probe, "missed"))
            self._log_skip(probe, "missed")

    def _log_skip(self, probe: str, reason: str) -> None:
        """A line for the first skip of a probe, then one at most every SKIP_LOG_EVERY_S with the count."""
        now_s = time.monotonic()
        last_s, pending = self._skips.get((probe, reason), (None, 0))
        pending += 1
        if last_s is not None and now_s - last_s < SKIP_LOG_EVERY_S:
            self._skips[probe, reason] = (last_s, pending)
            return
        self._skips[probe, reason] = (now_s, 0)
        starts = "1 start" if pending == 1 else f"{pending} starts"
        since = "" if last_s is None else f" in the last {now_s - last_s:.0f} s"
        if reason == "busy":
            why = "the previous run was still going (a run takes longer than the interval)"
        else:
            why = "it was later than the misfire grace (the daemon was paused or overloaded)"
        logger.warning(
            "probe %s: %s skipped%s: %s; every skip is counted in "
            'llm_monitor_probe_runs_skipped_total{reason="%s"}', probe, starts, since, why, reason,
        )  # fmt: skip

    async def _run_probe(self, name: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        scheduled_at = self._scheduled_at.pop(_job_id(name), None)
        try:
            async with self._limit:
                if scheduled_at is not None:
                    lateness_s = (datetime.now(UTC) - scheduled_at).total_seconds()
                    self.lateness_s.append(lateness_s)
                    self._metrics.observe_lateness(lateness_s)
                probe = self._probes.get(name)
                if probe is None:  # removed by a reload after this run was submitted
                    return
                self.stats.runs += 1
                result = await self._unstalled(probe)
            if result is None:
                return
            if result.ok:
                self.stats.ok += 1
            else:
                self.stats.failed += 1
            self._metrics.observe(result)
            await self._writer.put(result)
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            if not self._draining:
                raise
            # Cancelled by drain(): end quietly. Re-raised, APScheduler logs it as a job error with a traceback.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        except Exception:  # a job must not kill the scheduler
            logger.exception("probe %s failed unexpectedly", name)
        finally:
            self._inflight.discard(task)

    async def _unstalled(self, probe: ProbeSettings) -> ProbeResult | None:
        """The probe's result, run again if this daemon stalled during it; None when it stalled twice."""
        for attempt in (1, 2):
            start_s = time.monotonic()
            result = await self._probe(probe)
            stall_s = self._stall_s(start_s, result)
            if stall_s is None:
                return result
            self.stats.stalled += 1
            self._metrics.skipped.inc((probe.name, "stalled"))
            logger.warning(
                "probe %s: this daemon's event loop stalled %.1f s during the run, so it measured the daemon, "
                "not %s: %s",
                probe.name, stall_s, probe.target, "running it again" if attempt == 1 else "not recorded",
            )  # fmt: skip
        return None

    def _stall_s(self, start_s: float, result: ProbeResult) -> float | None:
        """The daemon's own stall during a run when it is long enough to void the run's measurement."""
        if self._loop_lag is None:
            return None
        now_s = time.monotonic()
        elapsed_s = result.latency_ms / 1000.0 if result.latency_ms is not None else now_s - start_s
        return self._loop_lag.voids(start_s, elapsed_s, now_s)

    async def _probe(self, probe: ProbeSettings) -> ProbeResult:
        target = self._settings.target(probe.target)
        started_at = datetime.now(UTC)
        try:
            async with asyncio.timeout(target.timeout_s + TIMEOUT_SLACK_S):
                return await self._prober.run(target, probe, self._settings.api_key(target.name))
        except TimeoutError:
            elapsed_ms = (datetime.now(UTC) - started_at).total_seconds() * 1000.0
            return timeout_result(target, probe, started_at=started_at, elapsed_ms=elapsed_ms)

    def pause(self) -> None:
        """Stop starting runs; runs already going continue."""
        if self._scheduler is not None and self.running:
            self._scheduler.pause()

    async def drain(self, grace_s: float, force: asyncio.Event) -> int:
        """Wait up to `grace_s` (or until `force` is set) for running jobs, then cancel the rest; returns cancelled."""
        self._draining = True
        left = await wait_then_cancel(self._inflight, grace_s, interrupt=force, msg="daemon shutting down")
        return len(left)

    async def shutdown(self) -> None:
        if self._scheduler is None:
            return
        if self._scheduler.state != STATE_STOPPED:
            self._scheduler.shutdown(wait=False)
            # AsyncIOScheduler runs its shutdown on the next loop iteration.
            await asyncio.sleep(0)
        self._scheduler = None
