"""Soak: the daemon at a high probe rate for 10 minutes against a mock that fails 10 % of requests.

The real daemon runs in this process (scheduler, prober, single writer, alert engine, outbox and
dispatcher, rollups, API) on a temporary SQLite file, or on `--db URL`. It watches ONE mock vLLM
process on 127.0.0.1 started with `--error-rate 0.1` (a 500 with an empty body for one request in
ten) through `--probes` probes every `--interval-s` seconds. Two alert rules fire and resolve all
the time on those failures, so notifications flow to a small webhook receiver in this process.

It reports probe runs per minute, scheduling lateness (p50, p99, max), RSS and open file
descriptors at the start (after the first minute, once pools and caches are warm, and at zero)
and at the end, the database size, and how many results were stored, dropped or skipped. Memory
or descriptors that grow with time, a writer that falls behind, or lateness that creeps up are
what a soak exists to catch. It is bounded (`--duration-s`, 600 by default) and not run in CI.

Run: python benchmarks/soak.py [--duration-s 600 --probes 50 --interval-s 1 --error-rate 0.1 --json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _machine import cpu_model

from monitor.config import parse_settings
from monitor.daemon import Daemon
from monitor.store.db import connect
from monitor.store.repo import Store

ROOT = Path(__file__).resolve().parent.parent
MOCK_TTFT_MS = 20.0
MOCK_ITL_MS = 2.0
SAMPLE_EVERY_S = 1.0
PROGRESS_EVERY_S = 30.0
WARM_AFTER_S = 60.0


def machine() -> str:
    model = cpu_model()
    mem_gb = psutil.virtual_memory().total / 2**30
    return (
        f"{model}, {os.cpu_count()} cores, {mem_gb:.0f} GB, Python {platform.python_version()} on {platform.system()}"
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def start_mock(error_rate: float) -> tuple[subprocess.Popen[str], str]:
    args = [sys.executable, "-m", "monitor.mock.server", "--host", "127.0.0.1", "--port", "0",
            "--ttft-ms", str(MOCK_TTFT_MS), "--itl-ms", str(MOCK_ITL_MS), "--error-rate", str(error_rate),
            "--no-record-timings"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.search(r"listening on (http://\S+/v1)", line)
        if match:
            # Keep draining its output so the mock never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, match.group(1)
    raise RuntimeError("the mock did not start")


def config(args: argparse.Namespace, base_url: str, db_url: str, hook_url: str) -> dict[str, Any]:
    hello = [{"role": "user", "content": "你好"}]
    kinds = [
        {"endpoint": "chat", "messages": hello, "max_tokens": 64},
        {"endpoint": "chat", "messages": hello, "max_tokens": 64, "stream": False},
        {"endpoint": "completion", "prompt": "你好", "max_tokens": 16},
    ]
    return {
        "storage": {"url": db_url},
        "targets": [{"name": "mock", "base_url": base_url, "model": "glm-4-9b-chat", "timeout_s": 10}],
        "probes": [
            {"name": f"p{i:02d}", "target": "mock", "interval_s": args.interval_s, **kinds[i % len(kinds)]}
            for i in range(args.probes)
        ],
        "rules": [
            {"name": "failing", "kind": "consecutive_failures", "count": 2},
            {
                "name": "error-rate",
                "kind": "threshold",
                "metric": "error_rate",
                "window_s": 60,
                "op": ">",
                "value": 0.2,
                "for": "10s",
            },
        ],  # fmt: skip
        "receivers": [{"name": "hook", "url": hook_url}],
        "api": {"port": 0},
        "daemon": {"shutdown_grace_s": 10},
    }


@dataclass
class Sample:
    t_s: float
    runs: int
    rss_mb: float
    fds: int
    lateness_max_ms: float
    loop_lag_max_ms: float


class LoopLag:
    """How late a 100 ms sleep wakes up: what blocks the event loop (or starves the process) shows here."""

    PERIOD_S = 0.1

    def __init__(self) -> None:
        self.max_s = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.PERIOD_S)
            self.max_s = max(self.max_s, loop.time() - before - self.PERIOD_S)

    def take(self) -> float:
        value, self.max_s = self.max_s, 0.0
        return value


@dataclass
class Report:
    machine: str
    duration_s: float
    probes: int
    interval_s: float
    error_rate: float
    database: str
    runs: int = 0
    ok: int = 0
    failed: int = 0
    stored: int = 0
    dropped: int = 0
    skipped_busy: int = 0
    missed: int = 0
    rows: int = 0
    runs_per_min: float = 0.0
    runs_per_min_lowest: float = 0.0
    lateness_p50_ms: float = 0.0
    lateness_p99_ms: float = 0.0
    lateness_max_ms: float = 0.0
    rss_start_mb: float = 0.0
    rss_warm_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_peak_mb: float = 0.0
    fds_start: int = 0
    fds_warm: int = 0
    fds_end: int = 0
    db_bytes: int | None = None
    notifications: int = 0
    errors_logged: int = 0
    tracebacks_logged: int = 0
    cpu_percent: float = 0.0
    samples: list[Sample] = field(default_factory=list)


class Counting(logging.Handler):
    """Counts ERROR records and tracebacks: a soak should end with none of the latter."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors = 0
        self.tracebacks = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.errors += 1
        self.tracebacks += record.exc_info is not None


async def receiver() -> tuple[web.AppRunner, str, list[int]]:
    received: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        received.append(1)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hook", received


def db_bytes(db_url: str) -> int | None:
    if not db_url.startswith("sqlite"):
        return None
    path = Path(db_url.split("///", 1)[1])
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


async def soak(args: argparse.Namespace, base_url: str, db_url: str) -> Report:
    proc = psutil.Process()
    counting = Counting()
    logging.getLogger().addHandler(counting)
    runner, hook_url, received = await receiver()
    report = Report(machine(), args.duration_s, args.probes, args.interval_s, args.error_rate, db_url.split(":")[0])
    try:
        daemon = Daemon(parse_settings(config(args, base_url, db_url, hook_url)))
        serve = asyncio.create_task(daemon.serve())
        await daemon.started.wait()
        cpu0, wall0 = time.process_time(), time.monotonic()
        report.rss_start_mb, report.fds_start = proc.memory_info().rss / 2**20, proc.num_fds()
        lateness_s: list[float] = []
        next_progress = PROGRESS_EVERY_S
        lag = LoopLag()
        lag_task = asyncio.create_task(lag.run())
        while (elapsed_s := time.monotonic() - wall0) < args.duration_s and not serve.done():
            await asyncio.sleep(SAMPLE_EVERY_S)
            # Drained as it goes: the scheduler keeps only the last 10,000 samples.
            fresh = list(daemon.scheduler.lateness_s)
            daemon.scheduler.lateness_s.clear()
            lateness_s.extend(fresh)
            sample = Sample(
                round(elapsed_s, 1), daemon.scheduler.stats.runs, proc.memory_info().rss / 2**20, proc.num_fds(),
                round(1000 * max(fresh, default=0.0), 1), round(1000 * lag.take(), 1),
            )  # fmt: skip
            report.samples.append(sample)
            if not report.rss_warm_mb and elapsed_s >= WARM_AFTER_S:
                report.rss_warm_mb, report.fds_warm = sample.rss_mb, sample.fds
            if elapsed_s >= next_progress:
                next_progress += PROGRESS_EVERY_S
                print(f"[{elapsed_s:5.0f} s] {sample.runs} runs, RSS {sample.rss_mb:.0f} MB, {sample.fds} fds, "
                      f"{len(received)} notifications", file=sys.stderr)  # fmt: skip
        cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - wall0
        report.rss_end_mb, report.fds_end = proc.memory_info().rss / 2**20, proc.num_fds()
        lateness_s.extend(daemon.scheduler.lateness_s)
        lag_task.cancel()
        daemon.request_stop("soak finished")
        await serve
    finally:
        await runner.cleanup()
    summary = daemon.summary
    assert summary is not None
    for name in ("runs", "ok", "failed", "stored", "dropped", "skipped_busy", "missed"):
        setattr(report, name, getattr(summary, name))
    report.runs_per_min = summary.runs / (wall_s / 60)
    per_min = [b.runs - a.runs for a, b in zip(report.samples, report.samples[60:], strict=False)]
    report.runs_per_min_lowest = float(min(per_min)) if per_min else report.runs_per_min
    ms = [s * 1000 for s in lateness_s]
    if ms:
        report.lateness_p50_ms, report.lateness_p99_ms, report.lateness_max_ms = pct(ms, 50), pct(ms, 99), max(ms)
    report.rss_peak_mb = max(s.rss_mb for s in report.samples) if report.samples else report.rss_end_mb
    report.notifications = len(received)
    report.errors_logged, report.tracebacks_logged = counting.errors, counting.tracebacks
    report.cpu_percent = 100 * cpu_s / wall_s
    engine = await connect(db_url)
    try:
        report.rows = await Store.from_engine(engine).count_results()
    finally:
        await engine.dispose()
    report.db_bytes = db_bytes(db_url)
    return report


def minutes(r: Report) -> None:
    """One line per minute: what a leak or a creeping delay looks like over time."""
    print("minute   runs  lateness max  loop lag max   RSS MB  fds")
    previous = 0
    for start in range(0, len(r.samples), 60):
        chunk = r.samples[start : start + 60]
        runs = chunk[-1].runs - previous
        previous = chunk[-1].runs
        late = max(s.lateness_max_ms for s in chunk)
        lag = max(s.loop_lag_max_ms for s in chunk)
        print(
            f"{start // 60 + 1:6d} {runs:6d} {late:10.1f} ms {lag:10.1f} ms {chunk[-1].rss_mb:8.0f} {chunk[-1].fds:4d}"
        )


def show(r: Report) -> None:
    print(f"machine            {r.machine}")
    print(f"soak               {r.duration_s:.0f} s, {r.probes} probes every {r.interval_s:g} s, mock error rate "
          f"{r.error_rate:.0%}, {r.database}")  # fmt: skip
    print(f"probe runs         {r.runs} ({r.ok} ok, {r.failed} failed = {r.failed / max(r.runs, 1):.1%}); "
          f"{r.runs_per_min:.0f} per minute (lowest minute {r.runs_per_min_lowest:.0f})")  # fmt: skip
    print(f"results            {r.stored} stored, {r.rows} rows, {r.dropped} dropped, {r.skipped_busy} skipped busy, "
          f"{r.missed} missed")  # fmt: skip
    print(f"lateness           p50 {r.lateness_p50_ms:.1f} ms, p99 {r.lateness_p99_ms:.1f} ms, "
          f"max {r.lateness_max_ms:.1f} ms")  # fmt: skip
    print(f"RSS                start {r.rss_start_mb:.0f} MB, after 1 min {r.rss_warm_mb:.0f} MB, "
          f"end {r.rss_end_mb:.0f} MB, peak {r.rss_peak_mb:.0f} MB")  # fmt: skip
    print(f"open fds           start {r.fds_start}, after 1 min {r.fds_warm}, end {r.fds_end}")
    if r.db_bytes is not None:
        print(f"database           {r.db_bytes / 2**20:.1f} MB (SQLite file + WAL)")
    print(f"notifications      {r.notifications} delivered; CPU {r.cpu_percent:.0f} % of one core")
    print(f"log                {r.errors_logged} ERROR lines, {r.tracebacks_logged} tracebacks")
    minutes(r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=600.0, help="how long to soak (default 10 minutes)")
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--interval-s", type=float, default=1.0)
    parser.add_argument("--error-rate", type=float, default=0.1, help="fraction of mock requests answered 500")
    parser.add_argument("--db", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (with the per-second samples)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mock, base_url = start_mock(args.error_rate)
    try:
        with tempfile.TemporaryDirectory(prefix="llm-monitor-soak-") as tmp:
            db_url = args.db or f"sqlite+aiosqlite:///{tmp}/soak.db"
            report = asyncio.run(soak(args, base_url, db_url))
    finally:
        mock.terminate()
        mock.wait(timeout=10)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        show(report)


if __name__ == "__main__":
    main()
