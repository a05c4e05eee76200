"""APScheduler wiring: config -> probe jobs, plus the single writer that stores their results.

Each probe is an APScheduler 3.x job on an `AsyncIOScheduler` (interval or cron, jitter,
`max_instances=1`, coalescing, misfire grace). Every run is its own task, bounded by the target's
timeout and a concurrency semaphore, so a hung target only ever holds its own slot: other probes
keep their schedule. Results go through one bounded queue to one writer task, so the database
sees one writer at a time (SQLite has a single write lock) and a slow database slows probing down
instead of growing memory. A database that is down is different: probing goes on, and results wait
in a bounded outage buffer (`daemon.outage_buffer_max`) until it is back (see `ResultWriter`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
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
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import SQLAlchemyError

from monitor.config import ProbeSettings, Settings
from monitor.errors import StoreError
from monitor.metrics import ProbeMetrics
from monitor.probes import Prober
from monitor.results import ProbeResult
from monitor.store.db import describe_error
from monitor.store.repo import Store
from monitor.tasks import wait_then_cancel

__all__ = [
    "OUTAGE_BUFFER_MAX",
    "WRITE_QUEUE_MAX",
    "ProbeScheduler",
    "ResultWriter",
    "SchedulerStats",
    "build_trigger",
]

logger = logging.getLogger(__name__)

# Results waiting for the writer. At 1,000 probes a minute this is a minute of results; when it is
# full (database slow, not down) probe runs wait to enqueue, and later runs are skipped as busy.
WRITE_QUEUE_MAX = 1000
WRITE_BATCH_MAX = 50
# Results kept while the database is unreachable (`daemon.outage_buffer_max`). A result holds about
# 3 KB for a 64-token reply and 20 KB for 512 tokens, so the default stays within 15-100 MB.
OUTAGE_BUFFER_MAX = 5000
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 10.0
# A hung database (not a refused connection) must not hold the writer forever.
WRITE_TIMEOUT_S = 30.0
OUTAGE_REPORT_EVERY_S = 60.0
# The prober enforces the target timeout itself; this outer bound only guards against a bug there.
TIMEOUT_SLACK_S = 5.0
# First runs of interval probes are spread over at most this long (or one interval), so a config of
# many probes with equal intervals does not fire all of them in the same instant.
SPREAD_MAX_S = 60.0
LATENESS_SAMPLES = 10_000

OnStored = Callable[[ProbeResult], Awaitable[None]]


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
    now = now or datetime.now(UTC)
    # A stable per-name offset: the same probe starts at the same phase after every restart.
    spread_s = min(probe.interval_s, SPREAD_MAX_S) * (zlib.crc32(probe.name.encode()) % 1000) / 1000
    start = now + timedelta(seconds=spread_s)
    return IntervalTrigger(seconds=probe.interval_s, start_date=start, jitter=jitter, timezone=UTC)


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


class ResultWriter:
    """One task stores every result, in order and in batches, then hands each stored result to `on_stored`.

    Normally results wait in a bounded queue (`max_queue`): a slow database slows down the probes
    that produced them. While the database is unreachable the writer is in outage mode: results go
    to an outage buffer of at most `buffer_max` results (`daemon.outage_buffer_max`), probes are
    never held up, and the writer retries with exponential backoff (`retry_initial_s` doubling up to
    `retry_max_s`). A full buffer drops its oldest results; they are counted (`overflowed`, and in
    `dropped`) and logged once per outage. After recovery the buffer is written first, in order.

    A result the database refuses while it otherwise answers (a value out of range) is dropped on
    its own, counted in `rejected` and logged; the rest of its batch is stored. Nothing is lost
    without a count and a log line, and `run` never raises (except when cancelled).
    """

    def __init__(
        self,
        store: Store,
        *,
        on_stored: OnStored | None = None,
        max_queue: int = WRITE_QUEUE_MAX,
        buffer_max: int = OUTAGE_BUFFER_MAX,
        retry_initial_s: float = RETRY_INITIAL_S,
        retry_max_s: float = RETRY_MAX_S,
        write_timeout_s: float = WRITE_TIMEOUT_S,
    ) -> None:
        if buffer_max < 1:
            raise ValueError(f"buffer_max must be at least 1, got {buffer_max}")
        self._store = store
        self._on_stored = on_stored
        self._queue: asyncio.Queue[ProbeResult | None] = asyncio.Queue(maxsize=max_queue)
        # Results taken off the queue and not written yet (the next batches; in an outage, all of them).
        self._buffer: deque[ProbeResult] = deque()
        self._writing = 0  # results of the write in progress, out of the buffer until it ends
        self.buffer_max = buffer_max
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._write_timeout_s = write_timeout_s
        self._closing = False
        self._outage_since: float | None = None  # monotonic
        self._failures = 0  # failed attempts in this outage
        self._overflow_logged = False
        self._next_report = 0.0
        self.stored = 0
        self.dropped = 0  # never stored, for any reason: overflowed + rejected + lost when cancelled
        self.overflowed = 0
        self.rejected = 0
        self.outages = 0

    def qsize(self) -> int:
        """Results waiting to be written: queued and buffered."""
        return self._queue.qsize() + self.buffered

    @property
    def buffered(self) -> int:
        return len(self._buffer) + self._writing

    @property
    def _batch_max(self) -> int:
        # A failed batch goes back to the buffer, so a batch never exceeds the buffer's bound.
        return min(WRITE_BATCH_MAX, self.buffer_max)

    @property
    def outage(self) -> bool:
        """Whether the last write attempt found the database unreachable."""
        return self._outage_since is not None

    def outage_s(self) -> float:
        """How long the current outage has lasted (0 when there is none)."""
        return 0.0 if self._outage_since is None else time.monotonic() - self._outage_since

    async def put(self, result: ProbeResult) -> None:
        """Hand over a result. Waits while the queue is full, except in an outage (then it buffers)."""
        if self._outage_since is not None:
            self._keep(result)
            return
        await self._queue.put(result)

    async def close(self) -> None:
        """Ask `run` to finish once everything handed over before this call is written."""
        await self._queue.put(None)

    async def run(self) -> None:
        """Write until `close()` and everything before it is written; cancel it to give up (counted)."""
        try:
            while True:
                if not self._buffer:
                    if self._closing:
                        return
                    first = await self._queue.get()
                    if first is None:
                        return
                    self._buffer.append(first)
                self._take_queued()
                await self._write_next()
        except asyncio.CancelledError:
            self._give_up()
            raise

    def _take_queued(self) -> None:
        """Move queued results to the buffer: a batch normally, everything in an outage (bounded)."""
        while not self._queue.empty() and (self._outage_since is not None or len(self._buffer) < self._batch_max):
            item = self._queue.get_nowait()
            if item is None:
                self._closing = True
            else:
                self._keep(item)

    def _keep(self, result: ProbeResult) -> None:
        if self.buffered >= self.buffer_max:
            if not self._buffer:  # everything buffered is being written: the newest result has to go
                self._overflow(1)
                return
            self._buffer.popleft()
            self._overflow(1)
        self._buffer.append(result)

    def _overflow(self, count: int) -> None:
        self.overflowed += count
        self.dropped += count
        if not self._overflow_logged:
            self._overflow_logged = True
            logger.error(
                "outage buffer full (%d results, daemon.outage_buffer_max): dropping the oldest results until the "
                "database is back; the count is in the daemon summary",
                self.buffer_max,
            )

    async def _write_next(self) -> None:
        batch = [self._buffer.popleft() for _ in range(min(self._batch_max, len(self._buffer)))]
        self._writing = len(batch)
        try:
            stored, unwritten, error = await self._store_batch(batch)
        finally:
            self._writing = 0
        if unwritten:
            # Back to the front, in order. Results that arrived meanwhile were counted against the bound.
            self._buffer.extendleft(reversed(unwritten))
        if error is None and self._outage_since is not None:
            self._recovered(len(stored))
        await self._notify(stored)
        if error is not None:
            self._failed(error)
            self._take_queued()
            await asyncio.sleep(self._backoff_s())

    async def _store_batch(self, batch: list[ProbeResult]) -> tuple[list[ProbeResult], list[ProbeResult], str | None]:
        """Write `batch`: (stored, unwritten because the database is down, why it is down)."""
        error = await self._insert(batch)
        if error is None:
            return batch, [], None
        if not await self._database_answers(batch[0].probe):
            return [], batch, error
        # The database works, so something in the batch is refused: write one by one to find it.
        stored: list[ProbeResult] = []
        for i, result in enumerate(batch):
            error = await self._insert([result]) if len(batch) > 1 else error
            if error is None:
                stored.append(result)
            elif await self._database_answers(result.probe):
                self.rejected += 1
                self.dropped += 1
                logger.error(
                    "dropped the result of probe %s started at %s: the database refused it: %s",
                    result.probe, result.started_at.isoformat(), error,
                )  # fmt: skip
            else:
                return stored, batch[i:], error
        return stored, [], None

    async def _insert(self, batch: list[ProbeResult]) -> str | None:
        """None when written; otherwise a one-line reason."""
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await self._store.add_results(batch)
        except StoreError as exc:
            return str(exc)
        except TimeoutError:
            return f"writing {len(batch)} results took longer than {self._write_timeout_s:g} s"
        except Exception as exc:  # a value the driver cannot bind (a target's absurd numbers): never fatal
            return f"{type(exc).__name__}: {exc}"
        self.stored += len(batch)
        return None

    async def _database_answers(self, probe: str) -> bool:
        """A cheap read of the results table: tells an outage from a result the database refuses."""
        try:
            async with asyncio.timeout(self._write_timeout_s):
                # An empty range of the (probe, started_at) index: no scan, however big the table.
                await self._store.count_results(probe=probe, since=datetime.now(UTC))
        except Exception:  # any failure means "not answering"; the write error is what gets logged
            return False
        return True

    def _failed(self, error: str) -> None:
        self._failures += 1
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
            self._next_report = now + OUTAGE_REPORT_EVERY_S
            self.outages += 1
            self._overflow_logged = False
            logger.error(
                "database unavailable, buffering up to %d results (daemon.outage_buffer_max) and retrying: %s",
                self.buffer_max, error,
            )  # fmt: skip
            # From now on results skip the queue: they go straight to the bounded buffer.
            self._take_queued()
        elif now >= self._next_report:
            self._next_report = now + OUTAGE_REPORT_EVERY_S
            logger.warning(
                "database still unavailable after %.0f s: %d results buffered, %d dropped so far: %s",
                now - self._outage_since, self.buffered, self.overflowed, error,
            )  # fmt: skip
        else:
            logger.debug("write retry %d failed: %s", self._failures, error)

    def _recovered(self, written: int) -> None:
        assert self._outage_since is not None
        logger.warning(
            "database back after %.1f s: writing %d buffered results (%d dropped by the outage buffer in total)",
            time.monotonic() - self._outage_since, written + self.qsize(), self.overflowed,
        )  # fmt: skip
        self._outage_since = None
        self._failures = 0

    def _backoff_s(self) -> float:
        return min(self._retry_max_s, self._retry_initial_s * 2.0 ** min(self._failures - 1, 30))

    async def _notify(self, results: Sequence[ProbeResult]) -> None:
        if self._on_stored is None:
            return
        for result in results:
            try:
                await self._on_stored(result)
            except Exception:  # the alert engine must not stop the writer
                logger.exception("handling stored result of probe %s failed", result.probe)

    def _give_up(self) -> None:
        lost = self.buffered + sum(1 for item in _drain(self._queue) if item is not None)
        self._buffer.clear()
        self._writing = 0
        if lost:
            self.dropped += lost
            logger.error("%d results were not written: the writer was stopped (database unavailable?)", lost)


def _drain(queue: asyncio.Queue[ProbeResult | None]) -> list[ProbeResult | None]:
    items: list[ProbeResult | None] = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


class ProbeScheduler:
    """Owns the AsyncIOScheduler (created in `start`, inside the running loop) and the probe runs."""

    def __init__(self, settings: Settings, *, prober: Prober, writer: ResultWriter, metrics: ProbeMetrics) -> None:
        self._settings = settings
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

    def add_periodic(self, name: str, func: Callable[[], Awaitable[object]], interval_s: float) -> None:
        """A maintenance job (rollups, retention, absence checks) every `interval_s`, never overlapping itself."""
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

        trigger = IntervalTrigger(seconds=interval_s, timezone=UTC)
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
        elif event.code == EVENT_JOB_MISSED:
            self.stats.missed += 1
            self._metrics.skipped.inc((probe, "missed"))

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
                result = await self._probe(probe)
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

    async def _probe(self, probe: ProbeSettings) -> ProbeResult:
        target = self._settings.target(probe.target)
        started_at = datetime.now(UTC)
        try:
            async with asyncio.timeout(target.timeout_s + TIMEOUT_SLACK_S):
                return await self._prober.run(target, probe, self._settings.api_key(target.name))
        except TimeoutError:
            elapsed_ms = (datetime.now(UTC) - started_at).total_seconds() * 1000.0
            base = ProbeResult(
                probe=probe.name, target=target.name, endpoint=probe.endpoint, stream=probe.stream,
                started_at=started_at, max_tokens=probe.max_tokens,
            )  # fmt: skip
            detail = f"request exceeded timeout_s={target.timeout_s:g}"
            return replace(
                base, error_kind="timeout", error_detail=detail, timeout_phase="total", elapsed_ms=elapsed_ms
            )

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
