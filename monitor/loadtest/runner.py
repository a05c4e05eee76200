"""``run_loadtest(settings, params)``: one load run from start to verdict.

The runner owns, in this order: the database engine, the run row, a work directory, the Locust
child processes and the canary task. While Locust runs it tails the JSONL stream (``Recorder``),
shows progress, writes the per-second series, judges sweep steps, and keeps the run's heartbeat
fresh. SIGINT/SIGTERM stop Locust gracefully (a second signal kills it) and the run is stored as
``aborted``; a run whose runner was killed outright is marked aborted by the next run (stale
heartbeat). Only this process writes to the database, never a Locust worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.ext.asyncio import async_sessionmaker

from monitor.config import Settings
from monitor.loadtest.canary import run_canaries
from monitor.loadtest.cost import cost_metrics, cost_summary
from monitor.loadtest.params import LoadParams
from monitor.loadtest.plan import build_plan
from monitor.loadtest.process import WORKERS_MAX_WAIT_S, LoadTestError, LocustProcesses, require_locust
from monitor.loadtest.recorder import EventTail, Recorder, RunData
from monitor.loadtest.repo import STALE_AFTER_S, LoadRun, LoadStore, SeriesPoint
from monitor.loadtest.server_scrape import RunScrapes, off_summary
from monitor.loadtest.shapes import stage_bounds
from monitor.loadtest.slo import ObjectiveResult, evaluate, verdict
from monitor.loadtest.slo_metrics import length_summary, metric_value, reasoning_summary, summarize, turn_summary
from monitor.loadtest.sweep import StepResult, evaluate_step, goodput, knee
from monitor.loadtest.trust import generator_report, refusal
from monitor.loadtest.window import Window
from monitor.loadtest.workload import Plan
from monitor.store import Store, connect, ensure_schema
from monitor.store.server_metrics_repo import ServerMetricsStore
from monitor.target_http import target_session

__all__ = ["RunOutcome", "run_loadtest_async"]

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.5
FLUSH_INTERVAL_S = 2.0
# Beyond the planned duration: worker connection, spawning and Locust's own shutdown.
OVERRUN_GRACE_S = WORKERS_MAX_WAIT_S + 30.0
CANARY_STOP_GRACE_S = 10.0


@dataclass
class RunOutcome:
    run_id: int
    status: str
    verdict: str | None
    params: dict[str, Any]
    summary: dict[str, Any]
    slo: tuple[ObjectiveResult, ...]
    series: list[SeriesPoint]
    baseline: LoadRun | None
    started_at: datetime
    ended_at: datetime
    abort_reason: str | None = None
    steps: list[StepResult] = field(default_factory=list)
    exit_code: int = 0


class _Progress:
    """Live status on stderr: one rewritten line on a terminal, a line every few seconds otherwise."""

    PLAIN_EVERY_S = 5.0

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.tty = bool(stream is not None and stream.isatty())
        self._last_plain = 0.0

    def show(self, text: str, narrow: str | None = None) -> None:
        """Show ``text``, or on a terminal too narrow for it ``narrow`` (the same, tighter), cut to fit."""
        if self.stream is None:
            return
        if self.tty:
            # A line as wide as the terminal wraps, and the next \r would only clear its last row.
            width = shutil.get_terminal_size().columns
            if len(text) >= width and narrow is not None:
                text = narrow
            self.stream.write("\r\x1b[2K" + (text if len(text) < width else text[: width - 2] + "…"))
        elif time.monotonic() - self._last_plain >= self.PLAIN_EVERY_S:
            self._last_plain = time.monotonic()
            self.stream.write(text + "\n")
        self.stream.flush()

    def say(self, text: str) -> None:
        if self.stream is None:
            return
        self.stream.write(("\r\x1b[2K" if self.tty else "") + text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.stream is not None and self.tty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


class _Run:
    def __init__(self, settings: Settings, params: LoadParams, progress: _Progress) -> None:
        self.settings = settings
        self.params = params
        self.progress = progress
        self.data = RunData()
        self.abort_reason: str | None = None
        self.abort_signal: int | None = None
        self.steps: list[StepResult] = []
        self.canary_ok = self.canary_count = 0
        self._signals = 0
        self._procs: LocustProcesses | None = None
        self._warned = 0
        self.scrapes: RunScrapes | None = None
        self.plan: Plan | None = None

    def on_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            self.abort_reason = f"interrupted by {name}"
            self.abort_signal = signum
            self.progress.say(f"{name}: stopping the load (again to kill it)")
            if self._procs is not None:
                self._procs.signal(signal.SIGTERM)
        elif self._procs is not None:
            self._procs.signal(signal.SIGKILL)

    async def execute(self) -> RunOutcome:
        params = self.params
        require_locust()  # before the run row: a run that cannot start is a usage error, not history
        async with AsyncExitStack() as stack:
            engine = await connect(self.settings.storage.url)
            stack.push_async_callback(engine.dispose)
            await ensure_schema(engine)
            sessions = async_sessionmaker(engine, expire_on_commit=False)
            store = LoadStore(sessions)
            stale = await store.abort_stale(datetime.now(UTC), STALE_AFTER_S)
            if stale:
                logger.warning("marked %d stale running load runs as aborted: %s", len(stale), stale)
            baseline = None
            if params.baseline_id is not None:
                baseline = await store.get_run(params.baseline_id)
                if baseline is None:
                    raise LoadTestError(f"--baseline: no load run with id {params.baseline_id}")
            started_at = datetime.now(UTC)
            run_id = await store.create_run(
                started_at=started_at, target=params.target.name, base_url=params.target.base_url,
                model=params.target.model, params=params.to_json(), baseline_id=params.baseline_id,
            )  # fmt: skip
            workdir = Path(tempfile.mkdtemp(prefix=f"llm-monitor-load-{run_id}-"))
            try:
                if params.server_metrics:
                    # Each scrape sets its own timeout (ScrapeSettings); the session has none of its own.
                    session = await stack.enter_async_context(target_session())
                    self.scrapes = RunScrapes(session, params.target, self.settings.api_key(params.target.name),
                                              ServerMetricsStore(sessions), run_id, self.data.server)  # fmt: skip
                outcome = await self._drive(stack, store, Store(sessions), run_id, workdir, started_at, baseline)
            except BaseException as exc:
                reason = self.abort_reason or f"{type(exc).__name__}: {exc}"
                with contextlib.suppress(Exception):
                    await store.finish_run(run_id, status="aborted", ended_at=datetime.now(UTC), summary=None,
                                           slo=[], verdict=None, abort_reason=reason)  # fmt: skip
                if isinstance(exc, LoadTestError):
                    raise LoadTestError(f"{exc} (Locust logs kept in {workdir})") from None
                raise
            shutil.rmtree(workdir, ignore_errors=True)
            return outcome
        raise AssertionError("unreachable")

    async def _drive(
        self,
        stack: AsyncExitStack,
        store: LoadStore,
        canary_store: Store,
        run_id: int,
        workdir: Path,
        started_at: datetime,
        baseline: LoadRun | None,
    ) -> RunOutcome:
        params = self.params
        out = workdir / "events.jsonl"
        procs = LocustProcesses(workdir)
        self._procs = procs
        stack.push_async_callback(procs.close)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.on_signal, signum)
            stack.callback(loop.remove_signal_handler, signum)
        recorder = Recorder(store, run_id, self.data, EventTail(out))
        if params.workload is not None:
            # Lengths are counted in the server's own tokens (its /tokenize) before the load starts.
            self.progress.show("building the workload plan ...")
            async with target_session() as http:
                api_key = self.settings.api_key(params.target.name)
                self.plan = await build_plan(params.workload, params, http, api_key, workdir)
            self.progress.done()
        await procs.start(params, out, plan=self.plan.path if self.plan is not None else None)
        stop_canaries = asyncio.Event()
        canary_task = self._start_canaries(canary_store, run_id, stop_canaries)
        scrape_task = None
        if self.scrapes is not None:
            scrape_task = asyncio.create_task(self.scrapes.run(stop_canaries), name="server-metrics")
        try:
            await self._watch(procs, recorder)
        finally:
            stop_canaries.set()
            if canary_task is not None:
                await _finish_task(canary_task)
            if scrape_task is not None:
                await _finish_task(scrape_task)
        code = await procs.wait()
        await procs.close()
        recorder.poll()
        await recorder.flush()
        if self.data.t0 is None and self.abort_reason is None:
            raise LoadTestError(f"Locust exited (code {code}) before the test started: {procs.last_log_line()}")
        ended_at = datetime.now(UTC)
        await store.link_canaries(run_id, started_at, ended_at)
        canaries = await store.canary_stats(run_id)
        return await self._conclude(store, run_id, started_at, ended_at, canaries.to_json(), baseline)

    def _start_canaries(self, store: Store, run_id: int, stop: asyncio.Event) -> asyncio.Task[Any] | None:
        params = self.params
        if not params.canaries:
            return None
        api_key = self.settings.api_key(params.target.name)
        return asyncio.create_task(
            run_canaries(params.target, params.canaries, api_key, store, run_id, params.canary_interval_s, stop),
            name="canaries",
        )

    async def _watch(self, procs: LocustProcesses, recorder: Recorder) -> None:
        params = self.params
        deadline = time.monotonic() + params.run_s + OVERRUN_GRACE_S
        next_flush = time.monotonic() + FLUSH_INTERVAL_S
        wait_task = asyncio.create_task(procs.wait())
        try:
            while True:
                done, _ = await asyncio.wait({wait_task}, timeout=POLL_INTERVAL_S)
                recorder.poll()
                self._judge_steps(procs)
                self._show_progress()
                if time.monotonic() >= next_flush:
                    await recorder.flush()
                    next_flush = time.monotonic() + FLUSH_INTERVAL_S
                if done:
                    return
                if time.monotonic() > deadline:
                    logger.warning("Locust overran its planned duration by %.0f s; stopping it", OVERRUN_GRACE_S)
                    procs.signal(signal.SIGTERM)
                    deadline = float("inf")
        finally:
            self.progress.done()
            if not wait_task.done():
                wait_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await wait_task

    def _judge_steps(self, procs: LocustProcesses | None) -> None:
        sweep, data = self.params.sweep, self.data
        if sweep is None or data.t0 is None or (self.steps and not self.steps[-1].passed):
            return
        stages = sweep.stages()
        bounds = stage_bounds(stages)
        while len(self.steps) < len(stages):
            index = len(self.steps)
            if data.complete_before < data.t0 + bounds[index][1]:
                return
            params = self.params
            step = evaluate_step(data, index, stages[index].level, bounds[index], sweep.warmup_s,
                                 params.objectives, params.target.price, params.inflight_cap)  # fmt: skip
            self.steps.append(step)
            self.progress.say(_step_line(step))
            if not step.passed:
                if procs is not None and procs.running:
                    procs.signal(signal.SIGTERM)
                return

    def _show_progress(self) -> None:
        data = self.data
        for message in data.warnings[self._warned :]:
            self.progress.say(f"warning: {message}")
        self._warned = len(data.warnings)
        if data.t0 is None:
            self.progress.show("waiting for Locust to start ...")
            return
        last = data.last_second()
        elapsed_s = time.time() - data.t0
        left_s = max(0.0, self.params.run_s - elapsed_s)
        if last is None:
            self.progress.show(f"[{elapsed_s:4.0f}s, {left_s:.0f}s left] no request finished yet")
            return
        window = data.window(last - 4, last + 1)
        span = 5.0
        users = data.users.get(last)
        rate, tps = metric_value("rps", window, span), metric_value("tokens_per_s", window, span)
        ttft, err = metric_value("ttft_p95_ms", window, span), metric_value("error_rate", window, span)
        parts = [
            f"users {users}" if users is not None and not self.params.open_loop else "",
            f"{rate or 0:.1f} req/s",
            _first_token_text(ttft, window, span),
            f"{tps or 0:,.0f} tok/s",
        ]
        shown = [p for p in parts if p]
        errors = f"{100 * (err or 0):.1f}%"
        self.progress.show(
            "  ".join([f"[{elapsed_s:4.0f}s, {left_s:.0f}s left]", *shown, f"errors {errors}"]),
            " ".join([f"[{elapsed_s:.0f}s, {left_s:.0f}s left]", *shown, f"err {errors}"]),
        )

    async def _conclude(
        self,
        store: LoadStore,
        run_id: int,
        started_at: datetime,
        ended_at: datetime,
        canary: dict[str, Any],
        baseline: LoadRun | None,
    ) -> RunOutcome:
        params, data = self.params, self.data
        self._judge_steps(None)
        window = data.window()
        line = data.summary or {}
        last = data.last_second()
        first = data.first_s
        duration_s = float(line.get("elapsed_s") or (last - first + 1 if last is not None and first else 1.0))
        server = self.scrapes.summary() if self.scrapes is not None else off_summary()
        price = params.target.price
        extra = {"canary_ok_rate": canary["ok_rate"], "canary_ttft_p95_ms": canary["ttft_p95_ms"],
                 **server["metrics"], **cost_metrics(window, price)}  # fmt: skip
        summary: dict[str, Any] = {
            "duration_s": round(duration_s, 3),
            "metrics": summarize(window, duration_s),
            "endpoints": {ep: summarize(data.window(endpoint=ep), duration_s) for ep in data.endpoints()},
            "errors": dict(window.errors),
            "error_samples": line.get("error_samples", {}),
            # Requests retried once because the server had closed their pooled connection (not failures).
            "reconnects": int(line.get("reconnects") or 0),
            "tokens_estimated": window.estimated_tokens,
            "reasoning": reasoning_summary(window),
            "turns": turn_summary(window),  # TTFT by session turn; [] without sessions
            "lengths": length_summary(window),  # prompt and output token counts of successful requests
            # Golden answers graded by the Locust users (lexical, per reply); None without golden prompts.
            "golden": {"graded": window.golden_graded, "passed": window.golden_passed}
            if window.golden_graded
            else None,
            "cost": cost_summary(window, price),
            "canary": canary,
            "server": server,
            "generator": generator_report(line, duration_s, params, window),
            "workload": self.plan.info if self.plan is not None else None,
            "warnings": data.warnings[-20:],
            "workers_lost": line.get("workers_lost") or [],  # {"id", "host", "at_s", "how"} per lost worker
            "locust": line.get("locust", []),
        }
        if params.sweep is not None:
            best = goodput(self.steps) if params.objectives else None
            saturated = next((s for s in self.steps if s.saturation is not None), None)
            summary["sweep"] = {
                "steps": [s.to_json() for s in self.steps],
                "goodput_rps": best.rate if best is not None else None,
                "goodput_tokens_per_s": best.metrics.get("tokens_per_s") if best is not None else None,
                "knee": knee(self.steps),
                # The first step at which the server saturated (and the sweep stopped); None: it kept up.
                "saturated_at": {"step": saturated.index + 1, "rate": saturated.rate, **saturated.saturation.to_json()}
                if saturated is not None and saturated.saturation is not None
                else None,
            }
            judged = best or (self.steps[-1] if self.steps else None)
            slo = judged.results if judged is not None and params.objectives else ()
            # Without an SLO a sweep only looks for the knee: no gate, no verdict.
            result: str | None = ("pass" if best is not None else "fail") if params.objectives else None
        else:
            slo = evaluate(params.objectives, lambda name: metric_value(name, window, duration_s, extra))
            result = verdict(slo) if slo else None
        ok_requests = window.requests - window.failures
        # A knee is a claim about the server too: not one to make through a generator that was the bottleneck.
        claims = result is not None or (params.sweep is not None and summary["sweep"]["saturated_at"] is not None)
        refused = refusal(summary["generator"], params, server["metrics"].get("server_queue_max")) if claims else None
        if refused is not None:
            summary["generator"]["refusal"] = refused
        if self.abort_reason is None and line.get("ended_early"):
            # No generator was left: what ran says nothing about the planned load, so it is no pass.
            self.abort_reason = f"{line['ended_early']}: the run ended early"
        if self.abort_signal is not None:
            status, exit_code = "aborted", 128 + self.abort_signal
        elif self.abort_reason is not None:
            status, exit_code, result = "aborted", 1, None
        elif refused is not None:
            # The gate refuses to judge a server through a generator that was itself the bottleneck.
            status, exit_code, result = "inconclusive", 3, None
        elif result is not None:
            status, exit_code = ("passed", 0) if result == "pass" else ("failed", 1)
        else:
            # Without an SLO there is no gate, but a run in which nothing succeeded is not a success.
            status, exit_code = ("completed", 0) if ok_requests > 0 else ("failed", 1)
        slo_json = [r.to_json() for r in slo]
        await store.finish_run(run_id, status=status, ended_at=ended_at, summary=summary, slo=slo_json,
                               verdict=result, abort_reason=self.abort_reason)  # fmt: skip
        return RunOutcome(
            run_id=run_id, status=status, verdict=result, params=params.to_json(), summary=summary, slo=slo,
            series=data.points(), baseline=baseline, started_at=started_at, ended_at=ended_at,
            abort_reason=self.abort_reason, steps=self.steps, exit_code=exit_code,
        )  # fmt: skip


def _first_token_text(ttft: float | None, window: Window, span_s: float) -> str:
    shown = "-" if ttft is None else f"{ttft:.0f}"
    # TTFA only once a reply reasoned: before that it is TTFT's number.
    if not window.reasoned:
        return f"TTFT p95 {shown} ms"
    ttfa = metric_value("ttfa_p95_ms", window, span_s)
    return f"TTFT/TTFA p95 {shown}/{'-' if ttfa is None else f'{ttfa:.0f}'} ms"


def _step_line(step: StepResult) -> str:
    rps = step.metrics.get("rps")
    ttft = step.metrics.get("ttft_p95_ms")
    if step.results:
        mark = "pass" if step.passed else "FAIL"
        why = f" (saturated: {step.saturation.detail})" if step.saturation is not None else ""
    else:  # no SLO: the step only says whether the server kept up
        mark = "kept up" if step.kept_up else "SATURATED"
        why = f" ({step.saturation.detail})" if step.saturation is not None else ""
    failed = [str(r.objective) for r in step.results if not r.passed]
    broke = f" broke {', '.join(failed)}" if failed else ""
    return (
        f"sweep step {step.index + 1}: {step.rate:g} req/s offered, {rps or 0:.1f} finished/s, "
        f"TTFT p95 {'-' if ttft is None else f'{ttft:.1f}'} ms -> {mark}{broke}{why}"
    )


async def _finish_task(task: asyncio.Task[Any]) -> None:
    try:
        async with asyncio.timeout(CANARY_STOP_GRACE_S):
            await task
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    except Exception:  # a canary or scrape failure must not lose the load run's results
        logger.exception("%s task failed", task.get_name())


async def run_loadtest_async(settings: Settings, params: LoadParams, progress: TextIO | None) -> RunOutcome:
    """Run one load test and store it; raises LoadTestError if Locust could not run at all."""
    return await _Run(settings, params, _Progress(progress)).execute()
