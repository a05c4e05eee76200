"""Waiting with a deadline: for an event, or for tasks that are then cancelled.

    if await wait_event(stop, timeout_s=5.0): ...       # set within 5 s?
    left = await wait_then_cancel(inflight, grace_s, interrupt=force, msg="shutting down")

Both return early once what they wait for happens (or `interrupt` is set), never raise for a
timeout, and leave nothing running behind: the helper waiters they start are cancelled and
awaited. `wait_then_cancel` retrieves the outcome of the tasks it cancels; the outcome of a task
that finished on its own stays on it for the caller to read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Any

__all__ = ["wait_event", "wait_then_cancel"]


async def wait_event(*events: asyncio.Event, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for any of `events`; whether one is set."""
    if not any(event.is_set() for event in events):
        waiters = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waiters, timeout=max(0.0, timeout_s), return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _cancel_all(waiters)
    return any(event.is_set() for event in events)


async def wait_then_cancel(
    tasks: Collection[asyncio.Future[Any]],
    timeout_s: float,
    *,
    interrupt: asyncio.Event | None = None,
    msg: str | None = None,
) -> list[asyncio.Future[Any]]:
    """Wait up to `timeout_s` for every task to finish (no longer once `interrupt` is set), then
    cancel the rest (with `msg`) and wait for them to end. Returns the tasks it had to cancel.

    `tasks` is read again at every wake-up, so it may be a live set that grows meanwhile (a
    scheduler's runs in flight: one submitted just before a pause starts late).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    interrupted = [asyncio.ensure_future(interrupt.wait())] if interrupt is not None else []
    try:
        while (pending := _running(tasks)) and not (interrupt is not None and interrupt.is_set()):
            remaining_s = deadline - loop.time()
            if remaining_s <= 0:
                break
            await asyncio.wait({*pending, *interrupted}, timeout=remaining_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await _cancel_all(interrupted)
    left = _running(tasks)
    for task in left:
        task.cancel(msg)
    # A cancelled task may still be running its cleanup; it has ended when this returns.
    await asyncio.gather(*left, return_exceptions=True)
    return left


def _running(tasks: Collection[asyncio.Future[Any]]) -> list[asyncio.Future[Any]]:
    return [task for task in tasks if not task.done()]


async def _cancel_all(waiters: Sequence[asyncio.Future[Any]]) -> None:
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
