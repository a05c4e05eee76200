"""Open-loop load on an OpenAI-compatible server: requests arrive at a fixed rate (constant or
Poisson), whether or not earlier replies have finished.

Each Locust user here is an arrival scheduler, not a client: it computes the intended send time
of every request, counts the arrival as due at that time, and queues it for a dispatcher that hands
it to a greenlet from a pool of ``--llm-max-inflight``. The schedule never waits for the pool: an
arrival that finds every slot taken waits in the queue, and is still counted when it was due, so
the arrival rate that a sweep compares with the finished rate is the one offered, not the one the
server let through. Latencies (TTFT, E2E) are measured from the intended send time, so that wait
shows up in the results instead of silently lowering the rate (no coordinated omission).

Two different delays, reported apart: the **slot wait** (every slot was taken: the server is slower
than the arrivals, or ``--llm-max-inflight`` is too low; ``Wait chat`` in Locust's table) and the
**send lag**, the generator's own lateness from the moment an arrival could leave (its intended
time, or the moment a slot freed) to the moment it did (``Lag chat``; a busy generator). Each has
its own warning. ``--llm-rate`` is the total for the whole test, split evenly over the users (run
one user per worker process); ``--llm-stages`` varies it (``5@30s,~50@2m``).

Run::

    locust -f locustfiles/llm_open.py --host http://127.0.0.1:8000 --headless -u 1 -r 1 -t 1m \
        --llm-rate 20 --llm-arrival poisson

``llm-monitor loadtest --rate 20`` runs this file and adds SLOs, history and reports.
"""

from __future__ import annotations

from locust import run_single_user, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import LocalRunner

import random
import time
from typing import NoReturn

import _collect
import gevent
from _common import LLMUser
from _requests import Request
from gevent.pool import Pool
from gevent.queue import JoinableQueue

from monitor.loadtest.shapes import Stage, level_at, parse_stages

# An arrival that leaves later than this after its intended time counts as late.
LATE_MS = 20.0
WARN_INTERVAL_S = 3.0
# Resolution at which a changing rate is followed.
RATE_STEP_S = 0.05
# Arrivals waiting for a free slot, at most; past it the schedule itself waits (and counts late).
BACKLOG_MAX = 100_000

Arrival = tuple[str, int, float, Request | None]  # endpoint, prompt index, intended time, request


class OpenLoopScheduler(LLMUser):
    """Spawns requests at intended times; one per worker process is enough."""

    def __init__(self, environment: Environment) -> None:
        options = environment.parsed_options
        assert options is not None
        # The connection pool must hold every request in flight, or they would queue unseen.
        self.concurrency = max(1, options.llm_max_inflight)
        super().__init__(environment)
        self.max_inflight = self.concurrency
        self.pool = Pool(self.max_inflight)
        self.backlog: JoinableQueue[Arrival] = JoinableQueue(BACKLOG_MAX)
        self.dispatcher = gevent.spawn(self._dispatch)
        self.waited = 0  # arrivals that found every slot taken, since the last warning
        spec = options.llm_stages
        self.stages: tuple[Stage, ...] | None = parse_stages(spec, option="--llm-stages") if spec else None
        self.rate = options.llm_rate
        self.share = 1.0 / max(1, options.llm_total_users)
        self.poisson = options.llm_arrival == "poisson"

    def on_stop(self) -> None:
        self.dispatcher.kill(block=False)
        self.pool.kill(block=False)

    @task
    def schedule(self) -> None:
        if self.cfg.arrivals:
            self._replay()
        pc = time.perf_counter
        endpoints = self.cfg.endpoints
        rng = random.Random()
        t0 = next_s = pc()
        n = late = window_n = 0
        worst_ms = 0.0
        warn_at = t0 + WARN_INTERVAL_S
        while True:
            at = self._next_arrival(next_s - t0, rng)
            if at is None:
                self._finish_schedule()
            next_s = t0 + at
            delay = next_s - pc()
            if delay > 0:
                gevent.sleep(delay)
            else:
                gevent.sleep(0)  # behind schedule: still let replies be read
            n += 1
            self._due(endpoints[n % len(endpoints)], n // len(endpoints), next_s)
            behind_ms = (pc() - next_s) * 1000.0
            window_n += 1
            if behind_ms > LATE_MS:
                late += 1
                worst_ms = max(worst_ms, behind_ms)
            if pc() >= warn_at:
                self._warn(late, window_n, worst_ms)
                late = window_n = 0
                worst_ms = 0.0
                warn_at = pc() + WARN_INTERVAL_S

    def _warn(self, late: int, arrivals: int, worst_ms: float) -> None:
        """The two delays of the last WARN_INTERVAL_S, each its own line: the schedule's own lateness (a busy
        generator) and the arrivals that found every slot taken (the server, or too low --max-inflight)."""
        if late:
            _collect.warn(
                f"open-loop generator behind schedule: {late} of {arrivals} arrivals were due more than "
                f"{LATE_MS:g} ms before the generator got to them (worst {worst_ms:.0f} ms); the generator is "
                "busy or other processes take its CPU: add workers or run it on a quieter machine"
            )
        if self.waited:
            _collect.warn(
                f"{self.waited} of {arrivals} arrivals found all {self.max_inflight} slots in flight and waited "
                f"for one ({self.backlog.qsize()} waiting now); latencies include this wait. The server is "
                "slower than the arrival rate, or --max-inflight (--llm-max-inflight in Locust's own command "
                "line) is too low"
            )
            self.waited = 0

    def _due(self, endpoint: str, prompt_index: int, intended_s: float, request: Request | None = None) -> None:
        """An arrival's intended time has come: count it (by that time) and queue it for a slot."""
        _collect.COLLECTOR.record_due(endpoint, intended_s + self.cfg.wall_offset_s)
        self.backlog.put((endpoint, prompt_index, intended_s, request))  # blocks past BACKLOG_MAX only

    def _dispatch(self) -> None:
        """Hand queued arrivals to free slots, in order. An arrival due while every slot was taken (it, or
        one queued before it, waited for a slot) could leave no earlier than the moment one freed: the time
        until then is its slot wait, and only the rest is the generator's send lag."""
        pc = time.perf_counter
        freed_s = 0.0  # when a slot last freed after every one had been taken
        while True:
            endpoint, prompt_index, intended_s, request = self.backlog.get()
            if self.pool.full():
                self.pool.wait_available()
                freed_s = pc()
            ready_s = max(intended_s, freed_s)
            self.waited += ready_s > intended_s
            self.pool.spawn(self._arrival, endpoint, prompt_index, intended_s, ready_s, request)
            self.backlog.task_done()

    def _replay(self) -> NoReturn:
        """A trace: each planned request at its own ``at_s``; worker i of n takes items i, i+n, ..."""
        runner = self.environment.runner
        options = self.environment.parsed_options
        n = max(1, options.llm_total_users if options is not None else 1)
        index = getattr(runner, "worker_index", 0) % n
        mine = self.cfg.arrivals[index::n]
        t0 = time.perf_counter()
        for endpoint, request in mine:
            intended = t0 + (request.at_s or 0.0)
            delay = intended - time.perf_counter()
            gevent.sleep(delay if delay > 0 else 0)
            self._due(endpoint, 0, intended, request)
        self._finish_schedule()

    def _finish_schedule(self) -> NoReturn:
        """The last stage is over: wait for the queued arrivals and the replies, then end a single-process test."""
        self.backlog.join()
        self.pool.join()
        runner = self.environment.runner
        if isinstance(runner, LocalRunner):
            # Spawned: quitting kills every user, this one included.
            gevent.spawn(runner.quit)
        raise StopUser

    def _next_arrival(self, t_s: float, rng: random.Random) -> float | None:
        """The intended time of the arrival after ``t_s`` (seconds into the schedule); None when it ends.

        The rate may change over time (stages), so time advances until the integral of the rate
        reaches 1 (constant arrivals) or an Exp(1) draw (Poisson), in steps of at most RATE_STEP_S.
        """
        need = rng.expovariate(1.0) if self.poisson else 1.0
        while True:
            level = level_at(self.stages, t_s) if self.stages else self.rate
            if level is None:
                return None
            rate = level * self.share
            if rate > 0 and need / rate <= RATE_STEP_S:
                return t_s + need / rate
            need -= rate * RATE_STEP_S
            t_s += RATE_STEP_S

    def _arrival(
        self, endpoint: str, prompt_index: int, intended_s: float, ready_s: float, request: Request | None = None
    ) -> None:
        """Send one arrival, timed from its intended time; ``ready_s``: when it could leave (a slot freed)."""
        lag_ms = (time.perf_counter() - ready_s) * 1000.0
        wait_ms = (ready_s - intended_s) * 1000.0
        intended_wall = intended_s + self.cfg.wall_offset_s
        _collect.COLLECTOR.record_start(endpoint, intended_wall, lag_ms, wait_ms, lag_ms > LATE_MS)
        self.fire(request_type="LLM", name=f"Lag {endpoint}", response_time=lag_ms, response_length=0)
        if wait_ms > 0:
            self.fire(request_type="LLM", name=f"Wait {endpoint}", response_time=wait_ms, response_length=0)
        self.send(endpoint, prompt_index, intended_s, request=request)


if __name__ == "__main__":
    run_single_user(OpenLoopScheduler)
