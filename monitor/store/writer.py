"""The single writer of probe results: one task, one bounded queue, batches, and an outage buffer.

The database sees one writer at a time (SQLite has a single write lock), and a slow database slows
probing down instead of growing memory. A database that is down is different: probing goes on, and
results wait in a bounded outage buffer (`daemon.outage_buffer_max`) until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from monitor.errors import StoreError
from monitor.results import ProbeResult
from monitor.store.repo import Store

__all__ = ["OUTAGE_BUFFER_MAX", "WRITE_QUEUE_MAX", "OnStored", "ResultWriter"]

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

OnStored = Callable[[ProbeResult], Awaitable[None]]


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
        # `_store_batch` never raises. Cancelled inside it, `_writing` stays set: `_give_up` counts the batch as lost.
        self._writing = len(batch)
        stored, unwritten, error = await self._store_batch(batch)
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
