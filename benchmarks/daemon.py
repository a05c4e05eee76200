"""Daemon scale: 100 targets x 10 probes at one run a minute each, and 7-day trends over ~1M results.

Part 1 runs the real daemon in this process (scheduler, prober, single writer, alert engine,
API) on a temporary SQLite file, against ONE mock vLLM process on 127.0.0.1 that every target
points at under a different name. 1,000 probes at one a minute is ~16.7 probe runs per second;
first runs are spread over the first minute and every run gets up to `--jitter-s` of jitter.
It reports scheduling lateness (the time between a run's scheduled, jittered start and the
moment it got its concurrency slot), CPU time over wall time, and peak RSS of this process.

Part 2 bulk-inserts ~1M synthetic results (100 probes x 7 days x one a minute) and their minute
and hour rollups with plain executemany, then times trend and window queries that read rollups
(median of several runs), with a raw-rows query of the same window for contrast.

Run: python benchmarks/daemon.py [--targets 100 --probes 10 --duration-s 120 --trend-days 7]
Goals on a 2-core machine: lateness p99 < 100 ms, RSS < 200 MB, 7-day trend query < 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _machine import cpu_model
from sqlalchemy.ext.asyncio import async_sessionmaker

from monitor.alerts.source import RawWindowSource, RollupWindowSource
from monitor.config import parse_settings
from monitor.daemon import Daemon
from monitor.store.bucket import Bucket, floor_time
from monitor.store.db import connect, ensure_schema
from monitor.store.models_rollups import HOUR_S, MINUTE_S
from monitor.store.rollups import Rollups, with_fleet_rows

MOCK_TTFT_MS = 50.0
MOCK_ITL_MS = 5.0
QUERY_REPEATS = 7


def machine() -> str:
    model = cpu_model()
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()} on {platform.system()}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def start_mock() -> tuple[subprocess.Popen[str], str]:
    args = [sys.executable, "-m", "monitor.mock.server", "--host", "127.0.0.1", "--port", "0",
            "--ttft-ms", str(MOCK_TTFT_MS), "--itl-ms", str(MOCK_ITL_MS), "--no-record-timings"]  # fmt: skip
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.Popen(args, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.search(r"listening on (http://\S+/v1)", line)
        if match:
            # Keep draining its output so the mock never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, match.group(1)
    raise RuntimeError("the mock did not start")


# --- part 1: scheduling at scale ------------------------------------------------------------------


async def run_scale(targets: int, probes: int, duration_s: float, jitter_s: float, base_url: str, db: Path) -> None:
    hello = [{"role": "user", "content": "你好"}]
    settings = parse_settings({
        "storage": {"url": f"sqlite+aiosqlite:///{db}"},
        "targets": [{"name": f"t{t:03d}", "base_url": base_url, "model": "glm-4-9b-chat"} for t in range(targets)],
        "probes": [{"name": f"t{t:03d}-p{p}", "target": f"t{t:03d}", "messages": hello, "max_tokens": 512,
                    "interval_s": 60, "jitter_s": jitter_s} for t in range(targets) for p in range(probes)],
        "rules": [{"name": "slow-ttft", "kind": "threshold", "metric": "ttft_ms", "agg": "p95", "window_s": 600,
                   "op": ">", "value": 2000},
                  {"name": "failing", "kind": "consecutive_failures", "count": 3}],
        "api": {"port": 0},
        "daemon": {"max_concurrent_probes": 64},
    })  # fmt: skip
    proc = psutil.Process()
    daemon = Daemon(settings)
    serve = asyncio.create_task(daemon.serve())
    await daemon.started.wait()
    cpu0, wall0 = time.process_time(), time.monotonic()
    peak_rss = proc.memory_info().rss
    while time.monotonic() - wall0 < duration_s and not serve.done():
        await asyncio.sleep(1.0)
        peak_rss = max(peak_rss, proc.memory_info().rss)
    cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - wall0
    lateness_ms = [s * 1000.0 for s in daemon.scheduler.lateness_s]
    daemon.request_stop("benchmark finished")
    await serve
    summary = daemon.summary
    assert summary is not None
    n = targets * probes
    print(f"\n== scheduling: {targets} targets x {probes} probes = {n} probes at 1/min ({n / 60:.1f} runs/s), "
          f"{wall_s:.0f} s, one mock on 127.0.0.1")  # fmt: skip
    print(f"probe runs         {summary.runs} ({summary.ok} ok, {summary.failed} failed), {summary.stored} stored, "
          f"{summary.skipped_busy} skipped, {summary.missed} missed")  # fmt: skip
    if lateness_ms:
        print(f"lateness           p50 {pct(lateness_ms, 50):.1f} ms   p99 {pct(lateness_ms, 99):.1f} ms   "
              f"max {max(lateness_ms):.1f} ms   ({len(lateness_ms)} runs)   goal p99 < 100 ms")  # fmt: skip
    print(f"CPU                {cpu_s:.1f} s over {wall_s:.0f} s = {100 * cpu_s / wall_s:.1f} % of one core")
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS           {peak_rss / 2**20:.0f} MB sampled each second (ru_maxrss {max_rss:.0f} MB)"
          "   goal < 200 MB")  # fmt: skip


# --- part 2: trend queries over ~1M results -------------------------------------------------------

_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


def synthetic_results(series: int, days: int, end: datetime, seed: int = 1) -> Iterator[tuple[Any, ...]]:
    """(started_at, probe, target, ok, error, truncated, latency, ttft, itl, tokens) once a minute per series."""
    rng = random.Random(seed)
    start = end - timedelta(days=days)
    for minute in range(days * 1440):
        at = start + timedelta(minutes=minute)
        drift = 1.0 + 0.3 * minute / (days * 1440)  # a slow latency creep, as regressions look
        for s in range(series):
            error = rng.random() < 0.01
            tokens = rng.randint(20, 200)
            ttft = rng.lognormvariate(4.4, 0.3) * drift
            itl = rng.lognormvariate(2.6, 0.2)
            yield (at + timedelta(seconds=s * 60 / series), f"p{s:03d}", f"t{s // 10:03d}", not error, error,
                   tokens == 200, ttft + itl * tokens, ttft, itl, tokens)  # fmt: skip


def build_trend_db(path: Path, series: int, days: int, end: datetime) -> tuple[int, float, int]:
    """Raw rows and minute + hour rollups, written with sqlite3 executemany; returns (rows, seconds, bytes)."""
    t0 = time.monotonic()
    minutes: dict[tuple[str, str, datetime], Bucket] = {}
    raw: list[tuple[Any, ...]] = []
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    insert_raw = (
        "INSERT INTO probe_results (started_at, probe, target, endpoint, stream, ok, error_kind, latency_ms, ttft_ms,"
        " itl_ms_mean, completion_tokens, truncated, checks, failed_checks) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    rows = 0
    for at, probe, target, ok, error, truncated, latency, ttft, itl, tokens in synthetic_results(series, days, end):
        raw.append((at.replace(tzinfo=None).strftime(_SQLITE_TIME), probe, target, "chat", True, ok,
                    "http_error" if error else None, latency, None if error else ttft, None if error else itl,
                    None if error else tokens, truncated, "[]", ""))  # fmt: skip
        bucket = minutes.setdefault((probe, target, floor_time(at, MINUTE_S)), Bucket())
        columns = {"latency_ms": latency, "ttft_ms": ttft, "itl_ms_mean": itl, "completion_tokens": tokens,
                   "error_kind": "http_error" if error else None, "truncated": truncated,
                   "failed_checks": ""}  # fmt: skip
        bucket.add(ok, columns)
        rows += 1
        if len(raw) >= 50_000:
            conn.executemany(insert_raw, raw)
            raw.clear()
    conn.executemany(insert_raw, raw)
    hours: dict[tuple[str, str, datetime], Bucket] = {}
    for (probe, target, start), bucket in minutes.items():
        hour = floor_time(start, HOUR_S)
        hours.setdefault((probe, target, hour), Bucket()).merge(bucket)
    hours = with_fleet_rows(hours)  # as the rollup job writes them
    insert_rollup = (
        "INSERT INTO probe_rollups (resolution_s, probe, target, bucket_start, results, ok_count, errors, truncated,"
        " check_failures, metrics) VALUES (?,?,?,?,?,?,?,?,?,?)"
    )
    for resolution, buckets in ((MINUTE_S, minutes), (HOUR_S, hours)):
        conn.executemany(insert_rollup, (
            (resolution, probe, target, start.replace(tzinfo=None).strftime(_SQLITE_TIME), b.results, b.ok_count,
             b.errors, b.counts["truncated"], "{}", json.dumps({k: h.to_json() for k, h in b.metrics.items()}))
            for (probe, target, start), b in buckets.items()
        ))  # fmt: skip
    conn.commit()
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return rows, time.monotonic() - t0, path.stat().st_size


async def timed(label: str, query: Callable[[], Awaitable[Any]], describe: Callable[[Any], str]) -> float:
    times: list[float] = []
    result: Any = None
    for _ in range(QUERY_REPEATS):
        t0 = time.perf_counter()
        result = await query()
        times.append((time.perf_counter() - t0) * 1000.0)
    median = statistics.median(times)
    print(f"{label:44} median {median:7.1f} ms   max {max(times):7.1f} ms   {describe(result)}")
    return median


async def run_trends(series: int, days: int, db: Path) -> None:
    url = f"sqlite+aiosqlite:///{db}"
    engine = await connect(url)
    try:
        await ensure_schema(engine)
        end = floor_time(datetime.now(UTC), HOUR_S)
        rows, build_s, size = await asyncio.to_thread(build_trend_db, db, series, days, end)
        size_mb = size / 2**20
        print(f"\n== trends: {rows:,} results ({series} probes x {days} days x 1/min) + rollups, "
              f"written in {build_s:.0f} s, SQLite file {size_mb:.0f} MB")  # fmt: skip
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        rollups = Rollups(sessionmaker)
        since = end - timedelta(days=days)

        def points(result: Any) -> str:
            return f"{len(result)} points, {sum(p.results for p in result):,} results"

        await timed(f"trend: 1 probe, {days} d, hourly", lambda: rollups.trend(
            since=since, until=end, step_s=HOUR_S, probe="p007"), points)  # fmt: skip
        await timed(f"trend: 1 target (10 probes), {days} d, hourly", lambda: rollups.trend(
            since=since, until=end, step_s=HOUR_S, target="t003"), points)  # fmt: skip
        await timed(f"trend: all {series} probes, {days} d, 6-hourly", lambda: rollups.trend(
            since=since, until=end, step_s=6 * HOUR_S), points)  # fmt: skip
        await timed("trend: 1 probe, 1 d, per minute", lambda: rollups.trend(
            since=end - timedelta(days=1), until=end, step_s=MINUTE_S, probe="p007"), points)  # fmt: skip

        def agg(result: Any) -> str:
            return f"p95 {result.value:.1f} ms over {result.count:,} results"

        window: dict[str, Any] = {"metric": "ttft_ms", "agg": "p95", "probe": "p007", "since": since, "until": end}
        await timed(f"baseline p95 TTFT, 1 probe, {days} d: rollups", lambda: RollupWindowSource(rollups).aggregate(
            **window), agg)  # fmt: skip
        await timed(f"baseline p95 TTFT, 1 probe, {days} d: raw rows", lambda: RawWindowSource(sessionmaker).aggregate(
            **window), agg)  # fmt: skip
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--probes", type=int, default=10, help="probes per target")
    parser.add_argument("--duration-s", type=float, default=120.0)
    parser.add_argument("--jitter-s", type=float, default=5.0)
    parser.add_argument("--trend-probes", type=int, default=100, help="synthetic series for the trend part")
    parser.add_argument("--trend-days", type=int, default=7)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-trends", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="llm-monitor-bench-") as tmp:
        if not args.skip_scale:
            mock, base_url = start_mock()
            try:
                asyncio.run(run_scale(args.targets, args.probes, args.duration_s, args.jitter_s, base_url,
                                      Path(tmp) / "scale.db"))  # fmt: skip
            finally:
                mock.terminate()
                mock.wait(timeout=10)
        if not args.skip_trends:
            asyncio.run(run_trends(args.trend_probes, args.trend_days, Path(tmp) / "trend.db"))


if __name__ == "__main__":
    main()
