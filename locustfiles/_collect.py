"""Locust-side collection: per-second windows, the JSONL event stream, worker -> master shipping.

Each finished request is folded into a ``monitor.loadtest.window.Window`` keyed by (wall-clock
second, endpoint). Workers send their windows to the master with every stats report
(``report_to_master``); the master, or a local runner, writes one JSON line per settled second
to ``--llm-out`` and a final ``summary`` line when Locust quits. ``llm-monitor loadtest`` tails
that file; nothing here touches a database.

Lines: ``{"type": "start", "t0": ...}``, ``{"type": "second", "t": EPOCH_S, "users": N,
"endpoints": {"chat": WINDOW, ...}}`` (a second may appear again if a worker report arrives
late; readers add them up), ``{"type": "warning", "message": ...}`` and
``{"type": "tick", "before": EPOCH_S}`` (every second before it has been written) and
``{"type": "summary", "locust": ..., "cpu_s": ..., "elapsed_s": ...}``.
"""

from __future__ import annotations

from locust.env import Environment
from locust.runners import WORKER_REPORT_INTERVAL, MasterRunner, WorkerRunner

import json
import logging
import math
import os
import resource
import time
from collections import Counter
from typing import IO, TYPE_CHECKING, Any

import _workers
import gevent
from _selftime import LoopLag

from monitor.loadtest.window import KEYS_PER_MS, Window, decode_hist, encode_hist

if TYPE_CHECKING:
    from _selftime import ReplyTiming

    from monitor.meter_measurement import StreamMeasurement

logger = logging.getLogger(__name__)

# A second is written once no more samples can arrive for it: at once locally, after the
# next worker report when distributed.
LOCAL_SETTLE_S = 1.2
MASTER_SETTLE_S = WORKER_REPORT_INTERVAL + 1.5
EMIT_INTERVAL_S = 1.0
MAX_ERROR_SAMPLES = 5


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class RunCpu:
    """This process's CPU while a run was on (test_start to test_stop), and the wall-clock time that covers.

    A worker reports from the moment it joins, and a master writes its summary seconds after the stop:
    neither its imports, its wait to join nor the settling afterwards is the run's CPU, and dividing by
    its own running time (not the run's planned duration) gives each process its real share of a core.
    """

    def __init__(self) -> None:
        self._since: tuple[float, float] | None = None  # (CPU, wall) at the last fold while running
        self.cpu_s = self.wall_s = 0.0

    def start(self) -> None:
        self._since = (_cpu_s(), time.monotonic())

    def stop(self) -> None:
        self._fold()
        self._since = None

    def _fold(self) -> None:
        if self._since is not None:
            now = (_cpu_s(), time.monotonic())
            self.cpu_s += now[0] - self._since[0]
            self.wall_s += now[1] - self._since[1]
            self._since = now

    def total(self) -> tuple[float, float]:
        """(CPU s, wall s) of the run so far."""
        self._fold()
        return self.cpu_s, self.wall_s

    def take(self) -> tuple[float, float]:
        """``total`` since the last take (a worker's report)."""
        taken = self.total()
        self.cpu_s = self.wall_s = 0.0
        return taken


class Collector:
    """Folds finished requests into windows; one per process (see ``COLLECTOR``)."""

    def __init__(self) -> None:
        self.windows: dict[tuple[int, str], Window] = {}
        self.error_samples: dict[str, list[str]] = {}
        self.warnings: list[str] = []
        # Requests sent again because the server had closed their pooled connection (not failures).
        self.reconnects = 0
        self.cpu = RunCpu()
        # (CPU seconds, wall seconds they were measured over) of each worker by client id, in the order they
        # first reported: a worker's share of its core is its own CPU over its own clock, not over the run's.
        self.worker_cpu: dict[str, tuple[float, float]] = {}
        # Socket reads of the replies, and those the kernel stamped (the rest: user-space stamps).
        self.reads = 0
        self.kernel_reads = 0
        self.loop_lag = LoopLag()

    def window(self, now_wall: float, endpoint: str) -> Window:
        key = (int(now_wall), endpoint)
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = Window()
        return window

    def record_ok(
        self,
        endpoint: str,
        now_wall: float,
        m: StreamMeasurement,
        tokens: int,
        golden: bool | None = None,
        *,
        good: bool | None = None,
        turn: int | None = None,
        timing: ReplyTiming | None = None,
    ) -> None:
        """One successful reply; `golden` says whether it matched its prompt's golden answer (None: it has none),
        `good` whether it met every --goodput clause (None: none given), `turn` its session turn, `timing`
        how its reads were stamped (read lags, error bounds)."""
        w = self.window(now_wall, endpoint)
        if timing is not None:
            self._record_timing(w, timing)
        w.requests += 1
        w.input_tokens += m.prompt_tokens or 0
        if good is not None:
            w.goodput_judged += 1
            w.good += good
        if m.prompt_tokens is not None:
            w.in_len[m.prompt_tokens] += 1
        w.out_len[tokens] += 1
        if golden is not None:
            w.golden_graded += 1
            w.golden_passed += golden
        if endpoint == "chat":
            # Completion prompts have no natural end: reaching max_tokens there is expected.
            w.finished += 1
            w.truncated += m.finish_reason == "length"
        w.output_tokens += tokens
        w.estimated_tokens += m.tokens_estimated
        ttft_ms, ttfa_ms = m.ttft_ms, m.ttfa_ms
        if ttft_ms is not None:
            w.ttft[int(ttft_ms * KEYS_PER_MS)] += 1
            if turn is not None:
                w.turn_hist(turn)[int(ttft_ms * KEYS_PER_MS)] += 1
            if ttfa_ms is None:
                w.answerless += 1
        if ttfa_ms is not None:
            w.ttfa[int(ttfa_ms * KEYS_PER_MS)] += 1
        if m.reasoning_chunk_count:
            w.reasoned += 1
            w.reasoning_estimated += m.reasoning_tokens_estimated
        w.reasoning_tokens += m.reasoning_tokens
        itl_ms = m.itl_ms
        if itl_ms:
            # A list comprehension plus Counter.update runs in C for the ~128 gaps of a reply.
            w.itl.update([int(gap * KEYS_PER_MS) for gap in itl_ms])
        w.e2e[int(m.latency_ms * KEYS_PER_MS)] += 1

    def _record_timing(self, w: Window, timing: ReplyTiming) -> None:
        self.reads += timing.reads
        self.kernel_reads += timing.kernel_reads
        if timing.read_lag_ms:
            w.read_lag.update([int(lag * KEYS_PER_MS) for lag in timing.read_lag_ms])
        errs = timing.token_err_ms
        if errs:
            # Keys round up: a bound must not shrink in the histogram.
            w.ttft_err[math.ceil(errs[0] * KEYS_PER_MS)] += 1
            if len(errs) > 1:
                w.itl_err.update([math.ceil((a + b) * KEYS_PER_MS) for a, b in zip(errs, errs[1:], strict=False)])

    def record_failure(
        self,
        endpoint: str,
        now_wall: float,
        kind: str,
        detail: str,
        tokens: int,
        reasoning_tokens: int = 0,
        *,
        judged: bool = False,
    ) -> None:
        """One failed request; `judged`: --goodput clauses were given, so it counts as not good."""
        w = self.window(now_wall, endpoint)
        w.requests += 1
        w.failures += 1
        w.goodput_judged += judged
        w.errors[kind] += 1
        w.output_tokens += tokens
        w.reasoning_tokens += reasoning_tokens
        samples = self.error_samples.setdefault(kind, [])
        if len(samples) < MAX_ERROR_SAMPLES and detail not in samples:
            samples.append(detail)

    def record_reconnect(self) -> None:
        self.reconnects += 1

    def record_due(self, endpoint: str, intended_wall: float) -> None:
        """An open-loop arrival came due (whether a slot was free or not): the offered load."""
        self.window(intended_wall, endpoint).sent += 1

    def record_start(self, endpoint: str, intended_wall: float, lag_ms: float, wait_ms: float, late: bool) -> None:
        """An arrival left: its send lag (the generator's own) and its slot wait, by its intended second."""
        w = self.window(intended_wall, endpoint)
        w.late += late
        w.lag[int(max(lag_ms, 0.0) * KEYS_PER_MS)] += 1
        w.wait[int(max(wait_ms, 0.0) * KEYS_PER_MS)] += 1

    def pop(self, before_s: float | None = None) -> dict[int, dict[str, Window]]:
        """Remove and return the windows of seconds before ``before_s`` (all if None)."""
        out: dict[int, dict[str, Window]] = {}
        for key in [k for k in self.windows if before_s is None or k[0] < before_s]:
            out.setdefault(key[0], {})[key[1]] = self.windows.pop(key)
        return out

    def merge_report(self, data: dict[str, Any]) -> None:
        for t, endpoints in data.get("windows", []):
            for endpoint, raw in endpoints.items():
                key = (int(t), str(endpoint))
                incoming = Window.from_json(raw)
                if key in self.windows:
                    self.windows[key].merge(incoming)
                else:
                    self.windows[key] = incoming
        for kind, details in (data.get("error_samples") or {}).items():
            samples = self.error_samples.setdefault(kind, [])
            for detail in details:
                if len(samples) < MAX_ERROR_SAMPLES and detail not in samples:
                    samples.append(detail)
        self.warnings.extend(str(message) for message in data.get("warnings") or ())
        self.reconnects += int(data.get("reconnects", 0))
        self.reads += int(data.get("reads", 0))
        self.kernel_reads += int(data.get("kernel_reads", 0))
        self.loop_lag.hist.update(decode_hist(data.get("loop_lag") or ()))

    def merge_worker_cpu(self, client_id: str, cpu_s: float, wall_s: float) -> None:
        cpu0_s, wall0_s = self.worker_cpu.get(client_id, (0.0, 0.0))
        self.worker_cpu[client_id] = (cpu0_s + cpu_s, wall0_s + wall_s)

    def start_run(self) -> None:
        """The run starts: CPU is counted from here, and what workers reported while they joined is dropped."""
        self.cpu = RunCpu()
        self.cpu.start()
        self.worker_cpu.clear()

    def processes(self, own_role: str) -> list[dict[str, Any]]:
        """CPU seconds of every generator process: this one (``own_role``) and each worker that reported."""
        cpu_s, wall_s = self.cpu.total()
        own = {"name": own_role, "role": own_role, "pid": os.getpid(), "cpu_s": round(cpu_s, 3),
               "wall_s": round(wall_s, 3)}  # fmt: skip
        workers = [
            {"name": f"worker-{n}", "role": "worker", "client_id": client_id, "cpu_s": round(cpu_s, 3),
             "wall_s": round(wall_s, 3)}
            for n, (client_id, (cpu_s, wall_s)) in enumerate(self.worker_cpu.items(), 1)
        ]  # fmt: skip
        return [own, *workers]


COLLECTOR = Collector()


def _encode(windows: dict[int, dict[str, Window]]) -> list[list[Any]]:
    return [[t, {ep: w.to_json() for ep, w in eps.items()}] for t, eps in sorted(windows.items())]


class _Emitter:
    """Writes the JSONL stream on the master or local runner."""

    def __init__(self, environment: Environment, path: str) -> None:
        self.environment = environment
        # Line-buffered so the runner sees each second as soon as it is written.
        self.file: IO[str] = open(path, "a", encoding="utf-8", buffering=1)
        self.settle_s = MASTER_SETTLE_S if isinstance(environment.runner, MasterRunner) else LOCAL_SETTLE_S
        self.t0 = time.time()
        self.greenlet: gevent.Greenlet[Any, Any] | None = None
        self.closed = False

    def write(self, obj: dict[str, Any]) -> None:
        if not self.closed:
            self.file.write(json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n")

    def start(self) -> None:
        self.t0 = time.time()
        runner = self.environment.runner
        self.write({"type": "start", "t0": self.t0, "runner": type(runner).__name__, "pid": os.getpid()})
        self.greenlet = gevent.spawn(self._loop)

    def _loop(self) -> None:
        while True:
            gevent.sleep(EMIT_INTERVAL_S)
            self.flush(time.time() - self.settle_s)

    def flush(self, before_s: float | None) -> None:
        runner = self.environment.runner
        users = runner.user_count if runner is not None else None
        for t, endpoints in sorted(COLLECTOR.pop(before_s).items()):
            line = {"type": "second", "t": t, "users": users}
            line["endpoints"] = {ep: w.to_json() for ep, w in endpoints.items()}
            self.write(line)
        for message in COLLECTOR.warnings:
            self.write({"type": "warning", "message": message})
        COLLECTOR.warnings.clear()
        # Every second before this one is complete, even those without a line (nothing finished).
        self.write({"type": "tick", "before": before_s if before_s is not None else time.time() + 1.0})

    def close(self, environment: Environment) -> None:
        if self.closed:
            return
        if self.greenlet is not None:
            self.greenlet.kill(block=False)
        self.flush(None)
        self.write(_summary(environment, time.time() - self.t0))
        self.closed = True
        self.file.close()


def _summary(environment: Environment, elapsed_s: float) -> dict[str, Any]:
    stats = environment.stats
    entries = []
    if stats is not None:
        for entry in stats.entries.values():
            entries.append(
                {
                    "type": entry.method,
                    "name": entry.name,
                    "requests": entry.num_requests,
                    "failures": entry.num_failures,
                    "avg": round(entry.avg_response_time, 3),
                    "p50": entry.get_response_time_percentile(0.5),
                    "p95": entry.get_response_time_percentile(0.95),
                    "p99": entry.get_response_time_percentile(0.99),
                }
            )
    errors = Counter[str]()
    if stats is not None:
        for error in stats.errors.values():
            errors[f"{error.name}: {error.error}"] += error.occurrences
    return {
        "type": "summary",
        "elapsed_s": round(elapsed_s, 3),
        "cpu_s": round(COLLECTOR.cpu.total()[0], 3),
        "locust": entries,
        "locust_errors": dict(errors.most_common(20)),
        "error_samples": COLLECTOR.error_samples,
        "reconnects": COLLECTOR.reconnects,
        "processes": COLLECTOR.processes("master" if isinstance(environment.runner, MasterRunner) else "local"),
        "reads": COLLECTOR.reads,
        "kernel_reads": COLLECTOR.kernel_reads,
        "loop_lag": encode_hist(COLLECTOR.loop_lag.hist),
        "workers_lost": _workers.LOST,
        "ended_early": _workers.ENDED_EARLY[0] if _workers.ENDED_EARLY else None,
    }


def install(environment: Environment, out_path: str | None) -> None:
    """Wire the collector into this process's runner (called from ``events.init``)."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):

        def report(client_id: str, data: dict[str, Any]) -> None:
            cpu_s, wall_s = COLLECTOR.cpu.take()
            data["llm"] = {
                "windows": _encode(COLLECTOR.pop()),
                "error_samples": COLLECTOR.error_samples,
                "warnings": COLLECTOR.warnings,
                "cpu_s": cpu_s,
                "wall_s": wall_s,
                "reconnects": COLLECTOR.reconnects,
                "reads": COLLECTOR.reads,
                "kernel_reads": COLLECTOR.kernel_reads,
                "loop_lag": encode_hist(COLLECTOR.loop_lag.take()),
            }
            COLLECTOR.reconnects = COLLECTOR.reads = COLLECTOR.kernel_reads = 0
            COLLECTOR.error_samples = {}
            COLLECTOR.warnings = []

        environment.events.report_to_master.add_listener(report)

        @environment.events.test_start.add_listener
        def _lag(environment: Environment, **kw: Any) -> None:
            COLLECTOR.cpu.start()
            COLLECTOR.loop_lag.start()

        environment.events.test_stop.add_listener(lambda **kw: COLLECTOR.cpu.stop())
        return
    if isinstance(runner, MasterRunner):
        _workers.install(environment)  # a worker that stops reporting is told, and the run goes on

        def merge(client_id: str, data: dict[str, Any]) -> None:
            if "llm" in data:
                llm = data["llm"]
                COLLECTOR.merge_report(llm)
                COLLECTOR.merge_worker_cpu(client_id, float(llm.get("cpu_s", 0.0)), float(llm.get("wall_s", 0.0)))

        environment.events.worker_report.add_listener(merge)
    if out_path:
        emitter = _Emitter(environment, out_path)

        @environment.events.test_start.add_listener
        def _start(environment: Environment, **kw: Any) -> None:
            COLLECTOR.start_run()
            COLLECTOR.loop_lag.start()
            emitter.start()

        environment.events.test_stop.add_listener(lambda **kw: COLLECTOR.cpu.stop())

        @environment.events.quitting.add_listener
        def _quit(environment: Environment, **kw: Any) -> None:
            emitter.close(environment)


def warn(message: str) -> None:
    """A warning for the person running the test: logged here, and shown by the runner."""
    logger.warning("%s", message)
    COLLECTOR.warnings.append(message)
