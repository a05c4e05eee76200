"""Turns for per-request bookkeeping, so that it never delays reading another stream's tokens.

Token timing is only as good as the delay between a chunk arriving and the greenlet that reads
it running. Finishing a request (final parse, checks, statistics) and starting the next one
cost far more than reading a token, and streams tend to finish together (a server emits one
token for every sequence in a batch at the same step). ``wait_quiet()`` defers that work until
the event loop has handled the I/O that is ready, a bounded slice per loop iteration.
"""

from __future__ import annotations

import collections
import contextlib
import time
from typing import Any

import gevent
from gevent.hub import Waiter

TURN_BUDGET_S = 0.001


class _Turns:
    """Gives greenlets turns for per-request bookkeeping after each loop iteration's I/O.

    A libev check watcher runs after the I/O callbacks of every loop iteration, so by then every
    stream with data pending has read (and timed) it. Waiting greenlets then run one after
    another for at most ``budget_s``; the rest wait for the next iteration. Under a burst of
    finishing replies this keeps token timing within about one budget, and under saturation
    bookkeeping still gets its share. (``gevent.idle()`` waits for a loop with nothing pending,
    rare under load, and then wakes every waiter at once: a 50 ms stall for 100 of them.)
    """

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.waiters: collections.deque[Waiter[Any]] = collections.deque()
        loop = gevent.get_hub().loop
        self.check = loop.check()
        self.check.start(self._run)
        # An active idle watcher makes the loop poll without blocking while turns are pending.
        self.idle = loop.idle()

    def wait(self) -> None:
        waiter: Waiter[Any] = Waiter()
        self.waiters.append(waiter)
        if not self.idle.active:
            self.idle.start(_nothing)
        try:
            waiter.get()
        finally:
            with contextlib.suppress(ValueError):  # killed while waiting
                self.waiters.remove(waiter)

    def _run(self) -> None:
        deadline = time.perf_counter() + self.budget_s
        waiters = self.waiters
        while waiters:
            waiters.popleft().switch(None)
            if time.perf_counter() >= deadline:
                break
        if not waiters and self.idle.active:
            self.idle.stop()


def _nothing() -> None:
    pass


_TURNS: list[_Turns] = []


def wait_quiet() -> None:
    """Wait for a turn: per-request bookkeeping must not delay reading another stream's tokens."""
    if not _TURNS:
        _TURNS.append(_Turns(TURN_BUDGET_S))
    _TURNS[0].wait()
