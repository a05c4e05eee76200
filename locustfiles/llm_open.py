"""Open-loop load on an OpenAI-compatible server: requests arrive at a fixed rate (constant or
Poisson), whether or not earlier replies have finished.

Each Locust user here is an arrival scheduler, not a client: it computes the intended send time
of every request and hands the request to a greenlet from a pool of ``--llm-max-inflight``.
Latencies (TTFT, E2E) are measured from the intended send time, so when the pool is full or the
process is too busy, the waiting shows up in the results instead of silently lowering the rate
(no coordinated omission). ``Lag chat`` in Locust's table, and a warning, show how far behind
schedule requests left. ``--llm-rate`` is the total for the whole test, split evenly over the
users (run one user per worker process); ``--llm-stages`` varies it (``5@30s,~50@2m``).

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

from monitor.loadtest.shapes import Stage, level_at, parse_stages

# An arrival that leaves later than this after its intended time counts as late.
LATE_MS = 20.0
WARN_INTERVAL_S = 3.0
# Resolution at which a changing rate is followed.
RATE_STEP_S = 0.05


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
        spec = options.llm_stages
        self.stages: tuple[Stage, ...] | None = parse_stages(spec, option="--llm-stages") if spec else None
        self.rate = options.llm_rate
        self.share = 1.0 / max(1, options.llm_total_users)
        self.poisson = options.llm_arrival == "poisson"

    def on_stop(self) -> None:
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
            # Blocks while max_inflight requests are running: that wait is the client-side queue.
            self.pool.spawn(self._arrival, endpoints[n % len(endpoints)], n // len(endpoints), next_s)
            behind_ms = (pc() - next_s) * 1000.0
            window_n += 1
            if behind_ms > LATE_MS:
                late += 1
                worst_ms = max(worst_ms, behind_ms)
            if pc() >= warn_at:
                if late:
                    _collect.warn(
                        f"open-loop generator behind schedule: {late} of {window_n} arrivals left more than "
                        f"{LATE_MS:g} ms late (worst {worst_ms:.0f} ms, {len(self.pool)}/{self.max_inflight} in "
                        "flight); latencies include this wait. If the server is not the bottleneck, raise "
                        "--max-inflight (--llm-max-inflight in Locust's own command line) or add workers."
                    )
                late = window_n = 0
                worst_ms = 0.0
                warn_at = pc() + WARN_INTERVAL_S

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
            self.pool.spawn(self._arrival, endpoint, 0, intended, request)
        self._finish_schedule()

    def _finish_schedule(self) -> NoReturn:
        """The last stage is over: wait for the replies, then end a single-process test."""
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

    def _arrival(self, endpoint: str, prompt_index: int, intended_s: float, request: Request | None = None) -> None:
        lag_ms = (time.perf_counter() - intended_s) * 1000.0
        _collect.COLLECTOR.record_sent(endpoint, intended_s + self.cfg.wall_offset_s, lag_ms, lag_ms > LATE_MS)
        self.fire(request_type="LLM", name=f"Lag {endpoint}", response_time=lag_ms, response_length=0)
        self.send(endpoint, prompt_index, intended_s, request=request)


if __name__ == "__main__":
    run_single_user(OpenLoopScheduler)
