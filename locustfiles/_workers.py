"""The master's watch over its workers: a worker that stops reporting is reported, and the run goes on.

Locust marks a worker "missing" after ``HEARTBEAT_LIVENESS`` (3) missed one-second heartbeats, drops its users
from the dispatcher and respawns the target count on the rest (rebalancing); a worker that says "quit" is removed
from ``runner.clients`` at once. Locust itself only logs both at INFO level, so this watch turns them into a
warning the runner shows, and counts them for the summary's ``workers_lost``. When the last worker is gone Locust
stops the users but a headless master would sit until ``-t`` runs out: the watch ends the run instead.
"""

from __future__ import annotations

from locust.env import Environment
from locust.runners import STATE_MISSING, MasterRunner

import time
from typing import Any

import _collect
import gevent

POLL_S = 0.5

# Lost workers of this run, in order: {"id", "host", "at_s", "how"}; read by _collect._summary.
LOST: list[dict[str, Any]] = []
# Why the run ended before its planned duration, once every worker was gone; read by _collect._summary.
ENDED_EARLY: list[str] = []


def _host(worker_id: str) -> str:
    """Locust names a worker ``<hostname>_<uuid hex>``."""
    return worker_id.rsplit("_", 1)[0] if "_" in worker_id else worker_id


class _Watch:
    def __init__(self, runner: MasterRunner) -> None:
        self.runner = runner
        self.seen: set[str] = set()
        self.lost: set[str] = set()
        self.t0_s: float | None = None
        self.ending = False

    def poll(self) -> None:
        clients = self.runner.clients
        present = {worker_id: node.state for worker_id, node in clients.items()}
        self.seen.update(worker_id for worker_id, state in present.items() if state != STATE_MISSING)
        if self.ending or self.t0_s is None:
            return
        for worker_id in sorted(self.seen - self.lost):
            state = present.get(worker_id)
            if state is not None and state != STATE_MISSING:
                continue
            self.lost.add(worker_id)
            at_s = time.monotonic() - self.t0_s
            left = self.runner.worker_count
            how = "stopped reporting" if state == STATE_MISSING else "quit"
            LOST.append({"id": worker_id, "host": _host(worker_id), "at_s": round(at_s, 1), "how": how})
            goes_on = f"the run goes on with {left} worker(s)" if left > 0 else "no worker is left"
            _collect.warn(f"worker {worker_id} ({_host(worker_id)}) {how} at +{at_s:.0f} s; {goes_on}")
        if self.lost and self.runner.worker_count <= 0:
            self.end_early(time.monotonic() - self.t0_s)

    def end_early(self, at_s: float) -> None:
        self.ending = True
        reason = f"every worker is gone (the last at +{at_s:.0f} s)"
        ENDED_EARLY.append(reason)
        _collect.warn(f"{reason}: the run ends early")
        # Locust stops the users but a headless master would wait for -t; quit outside its own greenlets.
        gevent.spawn_later(POLL_S, self.runner.quit)

    def stopping(self) -> None:
        """The run is stopping: count a worker lost just now (Locust stops when the last one goes), then stop."""
        if self.ending:
            return
        self.poll()
        self.ending = True

    def loop(self) -> None:
        while True:
            gevent.sleep(POLL_S)
            self.poll()


def install(environment: Environment) -> None:
    """Watch the master's workers (called once, on the master, from ``_collect.install``)."""
    runner = environment.runner
    if not isinstance(runner, MasterRunner):
        return
    watch = _Watch(runner)
    greenlet = gevent.spawn(watch.loop)

    def _start(environment: Environment, **kw: Any) -> None:
        watch.t0_s = time.monotonic()

    def _stopping(environment: Environment, **kw: Any) -> None:
        watch.stopping()

    def _quit(environment: Environment, **kw: Any) -> None:
        watch.ending = True
        greenlet.kill(block=False)

    environment.events.test_start.add_listener(_start)
    environment.events.test_stopping.add_listener(_stopping)
    environment.events.quitting.add_listener(_quit)
