"""How fast and how accurate is llm-monitor's load generator? Measured against the bundled mock.

1. Ceiling: completed streaming requests per second and output tokens per second, 128-token
   completions, zero server latency, the Locust process pinned to one core and the mock to the
   other. Every token is still timed (the full meter runs on every event). Reported with and
   without per-chunk usage (``continuous_usage_stats``, the default), as "requests per client
   CPU-second" (the rate one fully busy client core sustains) and as the wall-clock rate.
2. Accuracy: the mock sends the first token after 50 ms and the others every 10 ms, and records
   the wall-clock send time of each token per ``X-Request-Id`` (``GET /_mock/timings``). The
   client writes its own receive times (``--llm-trace``). Error = client reading - server send
   time, for TTFT and for every inter-token gap, with 32 and 256 concurrent streams.

Goals (issue 4): >= 1,500 completed streaming requests/s per client core; TTFT error p99 <= 5 ms
at 256 streams. Every phase is bounded (``--duration``, default 15 s per run).

Run: ``python benchmarks/loadgen.py [--duration 15] [--profile]``. ``--profile`` runs the
ceiling phase once more under py-spy and prints where the client's time goes.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _machine import cpu_model

from monitor.loadtest.recorder import EventTail, RunData
from monitor.loadtest.window import hist_percentile
from monitor.results import percentile

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "locustfiles" / "llm.py"
MOCK_CORE, CLIENT_CORE = 0, 1
WARMUP_S, COOLDOWN_S = 3.0, 1.0
TOKENS = 128
# ASCII continuations: every one of the 128 tokens carries text, so token i is content event i.
PROMPTS = [{"prompt": "Hello"}, {"prompt": "hello there"}]
_LISTENING = re.compile(r"listening on (http://\S+)/v1")


def machine() -> str:
    model = cpu_model()
    import locust

    import gevent

    return (
        f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Locust {locust.__version__}, gevent {gevent.__version__}, {platform.system()} {platform.release()}"
    )


REALTIME: list[str] = []  # ["chrt", "-f", "10"] with --realtime


def _pinned(core: int, args: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > core:
        args = ["taskset", "-c", str(core), *args]
    return [*REALTIME, *args]


class Mock:
    """``python -m monitor.mock.server --port 0`` pinned to one core."""

    def __init__(self, **knobs: object) -> None:
        args = [sys.executable, "-m", "monitor.mock.server", "--port", "0"]
        for name, value in knobs.items():
            flag = "--" + name.replace("_", "-")
            args += (
                ([flag] if value is True else ["--no-" + flag[2:]]) if isinstance(value, bool) else [flag, str(value)]
            )
        # A file, not a pipe: the mock logs every client that hangs up mid-stream, and a full
        # pipe would block it.
        self.log_path = Path(tempfile.mkstemp(prefix="loadgen-mock-", suffix=".log")[1])
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(_pinned(MOCK_CORE, args), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self.proc.poll() is None:
            match = _LISTENING.search(self.log_path.read_text(errors="replace"))
            if match:
                self.root_url = match.group(1)
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the mock did not start (see {self.log_path})")

    def timings(self) -> dict[str, list[float]]:
        with urllib.request.urlopen(self.root_url + "/_mock/timings", timeout=30) as resp:
            records = json.loads(resp.read())["requests"]
        return {r["request_id"]: r["token_times_s"] for r in records}

    def cpu_s(self) -> float:
        return _cpu_s(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _locust(
    mock: Mock, workdir: Path, users: int, duration_s: float, extra: list[str], prefix: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    prompts = workdir / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in PROMPTS) + "\n")
    out = workdir / f"events-{time.monotonic_ns()}.jsonl"
    args = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "-u", str(users), "-r", str(users), "-t", f"{duration_s:g}s", "--host", mock.root_url,
        "--llm-endpoint", "completion", "--llm-max-tokens", str(TOKENS), "--llm-prompts", str(prompts),
        "--llm-extra-body", '{"ignore_eos": true}', "--llm-out", str(out), "--exit-code-on-error", "0", *extra,
    ]  # fmt: skip
    log = (workdir / "locust.log").open("ab")
    proc = subprocess.Popen((prefix or []) + _pinned(CLIENT_CORE, args), cwd=workdir, stdout=log, stderr=log)
    log.close()
    return proc, out


def _wait_start(out: Path, proc: subprocess.Popen[bytes]) -> float:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        for line in EventTail(out).read_new():
            if line.get("type") == "start":
                return float(line["t0"])
        time.sleep(0.1)
    raise RuntimeError(f"Locust did not start (see {out.parent / 'locust.log'})")


def _events(out: Path) -> RunData:
    data = RunData()
    for line in EventTail(out).read_new():
        data.apply(line)
    return data


def ceiling(mock: Mock, workdir: Path, duration_s: float, *, continuous_usage: bool, users: int) -> dict[str, Any]:
    extra = [] if continuous_usage else ["--llm-no-continuous-usage"]
    proc, out = _locust(mock, workdir, users, duration_s, extra)
    t0 = _wait_start(out, proc)
    locust_pid = proc.pid
    time.sleep(max(0.0, t0 + WARMUP_S - time.time()))
    a_wall, a_cpu, a_mock = time.time(), _client_cpu(locust_pid), mock.cpu_s()
    time.sleep(max(0.0, t0 + duration_s - COOLDOWN_S - time.time()))
    b_wall, b_cpu, b_mock = time.time(), _client_cpu(locust_pid), mock.cpu_s()
    proc.wait(timeout=60)
    data = _events(out)
    window = data.window(a_wall, b_wall)
    span_s = int(b_wall) - int(a_wall)
    steady = data.window(int(a_wall) + 1, int(b_wall))
    steady_span = max(1, int(b_wall) - int(a_wall) - 1)
    client_cpu_s = b_cpu - a_cpu
    return {
        "continuous_usage": continuous_usage,
        "users": users,
        "requests": window.requests,
        "failures": window.failures,
        "rps": steady.requests / steady_span,
        "tokens_per_s": steady.output_tokens / steady_span,
        "client_cpu": client_cpu_s / (b_wall - a_wall),
        "mock_cpu": (b_mock - a_mock) / (b_wall - a_wall),
        "rps_per_client_core": window.requests / client_cpu_s if client_cpu_s > 0 else None,
        "client_cpu_ms_per_request": 1000 * client_cpu_s / window.requests if window.requests else None,
        "tokens_per_request": window.output_tokens / window.requests if window.requests else None,
        "span_s": span_s,
    }


def _client_cpu(pid: int) -> float:
    # `taskset` execs Locust, so the pid is Locust's own.
    return _cpu_s(pid)


def accuracy(mock: Mock, workdir: Path, duration_s: float, streams: int) -> dict[str, Any]:
    trace = workdir / f"trace-{streams}.jsonl"
    urllib.request.urlopen(urllib.request.Request(mock.root_url + "/_mock/timings", method="DELETE"), timeout=10)
    proc, out = _locust(mock, workdir, streams, duration_s, ["--llm-trace", str(trace)])
    t0 = _wait_start(out, proc)
    proc.wait(timeout=duration_s + 60)
    sent = mock.timings()
    ttft_err: list[float] = []
    token_err: list[float] = []
    gap_err: list[float] = []
    skipped = 0
    for line in trace.read_text().splitlines():
        rec = json.loads(line)
        server = sent.get(rec["id"])
        if rec["error"] or server is None or rec["ttft_ms"] is None or rec["start_wall"] < t0 + WARMUP_S:
            skipped += 1
            continue
        first = rec["start_wall"] + rec["ttft_ms"] / 1000.0
        client = [first]
        for gap in rec["itl_ms"]:
            client.append(client[-1] + gap / 1000.0)
        if len(client) != len(server):
            skipped += 1
            continue
        ttft_err.append((first - server[0]) * 1000.0)
        token_err.extend((c - s) * 1000.0 for c, s in zip(client, server, strict=True))
        gap_err.extend(
            ((c1 - c0) - (s1 - s0)) * 1000.0
            for c0, c1, s0, s1 in zip(client, client[1:], server, server[1:], strict=False)
        )
    data = _events(out)
    return {
        "streams": streams,
        "requests": len(ttft_err),
        "skipped": skipped,
        "rps": data.window().requests / max(1.0, float((data.summary or {}).get("elapsed_s") or duration_s)),
        "ttft_err_ms": _dist(ttft_err),
        "token_err_ms": _dist(token_err),
        "itl_err_ms": _dist([abs(e) for e in gap_err]),
        "measured_ttft_p50_ms": hist_percentile(data.window().ttft, 50.0),
        "measured_itl_p50_ms": hist_percentile(data.window().itl, 50.0),
    }


def _dist(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values)}


def profile(mock: Mock, workdir: Path, duration_s: float, users: int, continuous_usage: bool) -> str:
    """Run the ceiling under py-spy and return the top frames by own and inclusive time."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        return "py-spy not installed (pip install py-spy)"
    raw = workdir / f"profile-{int(continuous_usage)}.txt"
    extra = [] if continuous_usage else ["--llm-no-continuous-usage"]
    # --gil: only the thread running Python code, not gevent's idle resolver threads.
    prefix = [py_spy, "record", "--gil", "-r", "200", "--format", "raw", "-o", str(raw), "--"]
    saved = REALTIME[:]
    REALTIME.clear()  # py-spy follows the exec chain more reliably without chrt
    try:
        proc, _ = _locust(mock, workdir, users, duration_s, extra, prefix=prefix)
        proc.wait(timeout=duration_s + 60)
    finally:
        REALTIME[:] = saved
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [re.sub(r" \(.*?([^/]+\.py):\d+\)", r" (\1)", f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"py-spy, {total} samples ({'with' if continuous_usage else 'without'} per-chunk usage)"]
    lines += ["  own time:"] + [f"    {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(12)]
    wanted = ("StreamMeter.feed", "json", "FastHttpSession.request", "_read (", "Hub.run", "record_ok", "fire",
              "run_checks", "StreamMeter.finish", "HTTPResponse.feed", "recv")  # fmt: skip
    lines += ["  inclusive time of the request path:"]
    seen = set()
    for frame, n in inclusive.most_common():
        key = frame.split(" (")[0]
        if any(w in frame for w in wanted) and key not in seen:
            seen.add(key)
            lines.append(f"    {100 * n / total:5.1f}%  {frame}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="Seconds per Locust run (each phase runs 2).")
    parser.add_argument("--users", type=int, default=64, help="Concurrent streams in the ceiling phase.")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="Accuracy runs with 256 streams (median reported).")
    parser.add_argument("--profile", action="store_true", help="Also profile the ceiling phase with py-spy.")
    parser.add_argument(
        "--realtime", action="store_true",
        help="Run mock and client with SCHED_FIFO (chrt -f 10, needs root) so other tenants of a shared machine "
        "cannot preempt them.",
    )  # fmt: skip
    args = parser.parse_args()
    if args.realtime:
        if not shutil.which("chrt"):
            parser.error("--realtime needs chrt (util-linux)")
        REALTIME[:] = ["chrt", "-f", "10"]
    print(f"machine: {machine()}")
    print(f"mock on core {MOCK_CORE}, Locust on core {CLIENT_CORE}{', both SCHED_FIFO' if args.realtime else ''}; "
          f"{args.duration:g} s per run, first {WARMUP_S:g} s and last {COOLDOWN_S:g} s not counted")  # fmt: skip
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes share these cores)\n")
    workdir = Path(tempfile.mkdtemp(prefix="loadgen-"))
    results: dict[str, Any] = {"machine": machine(), "ceiling": [], "accuracy": []}
    mock = Mock(ttft_ms=0, itl_ms=0, record_timings=False)
    try:
        print("1. ceiling: 128-token streaming completions, zero server latency")
        for cu in (True, False):
            r = ceiling(mock, workdir, args.duration, continuous_usage=cu, users=args.users)
            results["ceiling"].append(r)
            print(
                f"   per-chunk usage {'on ' if cu else 'off'}: {r['rps']:7,.0f} req/s finished, "
                f"{r['tokens_per_s']:9,.0f} output tokens/s | client core {100 * r['client_cpu']:3.0f}% busy, "
                f"mock core {100 * r['mock_cpu']:3.0f}% | {r['client_cpu_ms_per_request']:.3f} ms client CPU/request"
                f" = {r['rps_per_client_core']:,.0f} req/s per client core | {r['failures']} failures"
            )
        if args.profile:
            for cu in (True, False):
                print(profile(mock, workdir, min(args.duration, 12.0), args.users, cu))
    finally:
        mock.stop()
    if not args.skip_accuracy:
        print("\n2. accuracy: mock TTFT 50 ms, ITL 10 ms; error = client reading - server send time")
        mock = Mock(ttft_ms=50, itl_ms=10, record_timings=True)
        try:
            for streams in [32] + [256] * args.repeat:
                r = accuracy(mock, workdir, args.duration, streams)
                results["accuracy"].append(r)
                t, k, g = r["ttft_err_ms"], r["token_err_ms"], r["itl_err_ms"]
                print(
                    f"   {streams:3d} streams, {r['requests']:,} requests ({r['rps']:.0f}/s): TTFT error p50 "
                    f"{t['p50']:.2f} ms, p99 {t['p99']:.2f} ms, max {t['max']:.2f} ms | per-token error p50 "
                    f"{k['p50']:.2f} ms, p99 {k['p99']:.2f} ms | |ITL error| p50 {g['p50']:.2f} ms, "
                    f"p99 {g['p99']:.2f} ms"
                )
        finally:
            mock.stop()
    print("\ngoals:")
    best = max((r["rps_per_client_core"] or 0 for r in results["ceiling"]), default=0)
    default = next((r for r in results["ceiling"] if r["continuous_usage"]), None)
    if default is not None:
        ok = default["rps_per_client_core"] >= 1500
        print(f"   >= 1,500 req/s per client core (default options): {default['rps_per_client_core']:,.0f} "
              f"-> {'met' if ok else 'MISSED'}; best configuration {best:,.0f}")  # fmt: skip
    runs256 = sorted(r["ttft_err_ms"]["p99"] for r in results["accuracy"] if r["streams"] == 256)
    if runs256:
        p99 = runs256[len(runs256) // 2]
        print(
            f"   TTFT error p99 <= 5 ms at 256 streams: median of {len(runs256)} runs {p99:.2f} ms "
            f"(runs: {', '.join(f'{v:.2f}' for v in runs256)}) -> {'met' if p99 <= 5 else 'MISSED'}"
        )
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nraw results: {workdir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
