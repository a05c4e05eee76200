"""The daemon's own event-loop lag: how late its short sleeps wake, and the stalls that overlapped a probe.

A monitor that is itself held off its core (a busy machine, a swapped-out page, a stopped process)
sees every deadline that passed meanwhile as the target's: a read timeout fires the moment the
loop runs again, though the reply may have sat in the socket all along, and a TTFT holds the
stall. ``LoopLag`` lets the scheduler tell those apart from the target's own failures:

    lag = LoopLag(on_lag=metrics.observe_loop_lag)
    task = asyncio.create_task(lag.run(stop))              # one owner: the daemon
    start_s = time.monotonic(); ...; lag.worst_s(start_s)  # the longest stall since start_s
    if (stall_s := lag.voids(start_s, span_s)) is not None: ...  # too long for what ran meanwhile

A stall is measured when the ticker wakes late; one still going on (the loop has not yet run the
ticker since it resumed) counts too, so a probe that finishes first in the resumed loop sees it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

__all__ = ["STALL_MIN_S", "STALL_VOIDS_S", "STALL_VOIDS_SHARE", "TICK_S", "LoopLag"]

TICK_S = 0.1
# Lags shorter than this are scheduling noise: observed in the histogram, not kept as stalls.
STALL_MIN_S = 0.05
MAX_STALLS = 4096
# A stall this long, and this share of the span it is judged against, voids what ran during it.
STALL_VOIDS_S = 0.1
STALL_VOIDS_SHARE = 0.1


class LoopLag:
    """Measures this process's asyncio loop lag; ``run`` is its one task."""

    def __init__(self, tick_s: float = TICK_S, *, on_lag: Callable[[float], None] | None = None) -> None:
        self._tick_s = tick_s
        self._on_lag = on_lag  # every tick's lag (s): the daemon's /metrics histogram
        self._expected_s: float | None = None  # monotonic time the ticker should wake next (None: not running)
        # (stall end, its length): the ends are increasing, so old ones drop off the left.
        self._stalls: deque[tuple[float, float]] = deque(maxlen=MAX_STALLS)

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set."""
        try:
            while not stop.is_set():
                self._expected_s = time.monotonic() + self._tick_s
                await asyncio.sleep(self._tick_s)
                now_s = time.monotonic()
                self.observe(now_s - self._expected_s, now_s)
        finally:
            self._expected_s = None

    def observe(self, lag_s: float, now_s: float) -> None:
        """One tick that woke ``lag_s`` late, at monotonic ``now_s``."""
        lag_s = max(0.0, lag_s)
        if self._on_lag is not None:
            self._on_lag(lag_s)
        if lag_s >= STALL_MIN_S:
            self._stalls.append((now_s, lag_s))

    def worst_s(self, since_s: float, now_s: float | None = None) -> float:
        """The longest stall (s) that overlapped monotonic ``since_s`` to now, including one still going on."""
        now_s = time.monotonic() if now_s is None else now_s
        worst = 0.0
        if self._expected_s is not None and now_s > self._expected_s:
            worst = now_s - self._expected_s  # the ticker is due and has not run: the loop is only now resuming
        for end_s, lag_s in reversed(self._stalls):
            if end_s < since_s:
                break
            # Only the part of the stall after since_s held up what started at since_s.
            worst = max(worst, min(lag_s, end_s - since_s))
        return worst

    def voids(self, since_s: float, span_s: float, now_s: float | None = None) -> float | None:
        """The worst stall since ``since_s`` when it voids a measurement over ``span_s`` seconds, else None.

        ``span_s`` is what the stall is compared with: a probe's own elapsed time, a request's timeout.
        """
        stall_s = self.worst_s(since_s, now_s)
        return stall_s if stall_s >= STALL_VOIDS_S and stall_s >= STALL_VOIDS_SHARE * span_s else None
