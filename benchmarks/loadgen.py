"""How fast and how accurate is llm-monitor's load generator, next to a minimal Locust file? Against the bundled mock.

Two Locust files run in the same benchmark, one after the other and alternating (ABBA), so that
both see the same machine: ours (``locustfiles/llm.py``, the file ``llm-monitor loadtest`` runs)
and ``benchmarks/minimal_locustfile.py`` (what a user writes without llm-monitor). Results are
printed side by side with the ratio ours / minimal: a ratio survives a busy machine better than
an absolute number does.

1. Ceiling: finished streaming requests per second (counted by the mock) and client CPU per
   request, 128-token completions, zero server latency, the Locust process on one core.
2. Accuracy: the mock sends the first token after 50 ms and the others every 10 ms and records
   the wall-clock send time of each token per ``X-Request-Id`` (``GET /_mock/timings``). Both
   files write every token's receive time to a trace. Error = client reading - server send time,
   for TTFT and for every token, at 32 and 256 concurrent streams.
3. Ours reports a bound on its own TTFT error per request (``ttft_bound_ms`` in its trace, from
   kernel receive timestamps). Checked per request against the mock's clock read just before the
   first token's write and just after it returned (``token_written_s``): 0 <= real error <= bound +
   the mock's write time, give or take LOOPBACK_EPSILON_MS.

Placement: the mock on core 0, Locust on core 1. ``--busy`` (the default) also runs a CPU burner
on core 0 at nice 19, so the client's machine has its other core busy, as on a shared machine;
the mock still gets that core when it needs it. ``--realtime`` runs mock and client at SCHED_FIFO.
Everything else on the machine is measured (/proc/stat minus our processes) and printed.

Run: ``python benchmarks/loadgen.py [--duration 12] [--repeat 3] [--no-busy] [--realtime]``
(about 3 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _machine import cpu_model

from monitor.results import percentile

ROOT = Path(__file__).resolve().parent.parent
MOCK_CORE, CLIENT_CORE = 0, 1
TOKENS = 128
# The mock reads its clock just before it writes a token and again once the write returned
# (monitor/mock/stream.py, _Sender.flush): the client's kernel received it between the two, give or take
# this much for loopback. A mock preempted between its clock read and its write shows as a long write, which
# the check allows for; before the second read existed, such a request was printed as NOT covered.
LOOPBACK_EPSILON_MS = 0.5
_LISTENING = re.compile(r"listening on (http://\S+)/v1")
_SUCCESS = re.compile(r"^vllm:request_success_total\{[^}]*\} (\S+)$", re.M)
BURNER = "while True: pass"
SAMPLE_S = 0.5
# A ceiling run where other processes took more than this share of the client's core is marked and
# left out of the medians (unless every run of that file was).
DISTURBED_SHARE = 0.10
REALTIME: list[str] = []  # ["chrt", "-f", "10"] with --realtime


@dataclass(frozen=True)
class File:
    """One Locust file under test and how to ask it for a trace."""

    name: str
    path: Path
    args: tuple[str, ...]
    trace_flag: str


def _files(workdir: Path) -> tuple[File, File]:
    prompts = workdir / "prompts.jsonl"
    # ASCII continuations: every one of the 128 tokens carries text, so token i is text event i.
    prompts.write_text(json.dumps({"prompt": "Hello"}) + "\n")
    ours = File("ours", ROOT / "locustfiles" / "llm.py", (
        "--llm-endpoint", "completion", "--llm-max-tokens", str(TOKENS), "--llm-prompts", str(prompts),
        "--llm-extra-body", '{"ignore_eos": true}', "--llm-out", str(workdir / "events.jsonl"),
    ), "--llm-trace")  # fmt: skip
    minimal = File(
        "minimal", ROOT / "benchmarks" / "minimal_locustfile.py", ("--max-tokens", str(TOKENS)), "--trace-file"
    )
    return ours, minimal


def machine() -> str:
    import locust

    import gevent

    return (
        f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Locust {locust.__version__}, gevent {gevent.__version__}, {platform.system()} {platform.release()}"
    )


def _pinned(core: int, args: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > core:
        args = ["taskset", "-c", str(core), *args]
    return [*REALTIME, *args]


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _core_busy_s() -> dict[int, float]:
    """Busy (non-idle, non-iowait) seconds per core since boot, from /proc/stat."""
    busy: dict[int, float] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name.startswith("cpu") and name != "cpu":
            t = [int(x) for x in ticks]
            busy[int(name[3:])] = (sum(t[:8]) - t[3] - t[4]) / os.sysconf("SC_CLK_TCK")
    return busy


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class BenchError(Exception):
    """A run that measured nothing, or too little to measure: one line naming its log."""


class Mock:
    """``python -m monitor.mock.server --port 0`` pinned to MOCK_CORE."""

    def __init__(self, **knobs: object) -> None:
        args = [sys.executable, "-m", "monitor.mock.server", "--port", "0"]
        for name, value in knobs.items():
            flag = "--" + name.replace("_", "-")
            args += ([flag] if value else ["--no-" + flag[2:]]) if isinstance(value, bool) else [flag, str(value)]
        # A file, not a pipe: the mock logs every client that hangs up mid-stream, and a full pipe would block it.
        self.log_path = Path(tempfile.mkstemp(prefix="loadgen-mock-", suffix=".log")[1])
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(_pinned(MOCK_CORE, args), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            match = _LISTENING.search(self.log_path.read_text(errors="replace"))
            if match:
                self.root_url = match.group(1)
                return
            time.sleep(0.05)
        _stop(self.proc)
        raise BenchError(f"the mock did not start (see {self.log_path})")

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.root_url + path, timeout=30) as resp:
            body: bytes = resp.read()
        return body

    def finished(self) -> int:
        """Requests the mock has finished sending (vllm:request_success_total, all reasons)."""
        return int(sum(float(v) for v in _SUCCESS.findall(self._get("/metrics").decode())))

    def timings(self) -> dict[str, tuple[list[float], list[float]]]:
        """Per request: the mock's clock just before each token's write, and just after it returned."""
        records = json.loads(self._get("/_mock/timings"))["requests"]
        return {r["request_id"]: (r["token_times_s"], r["token_written_s"]) for r in records}

    def clear_timings(self) -> None:
        req = urllib.request.Request(self.root_url + "/_mock/timings", method="DELETE")
        urllib.request.urlopen(req, timeout=10).close()


def _locust(file: File, mock: Mock, workdir: Path, users: int, duration_s: float, trace: Path | None) -> Any:
    args = [
        sys.executable, "-m", "locust", "-f", str(file.path), "--headless", "--only-summary",
        "-u", str(users), "-r", str(users), "-t", f"{duration_s:g}s", "--host", mock.root_url,
        "--exit-code-on-error", "0", *file.args, *([file.trace_flag, str(trace)] if trace else []),
    ]  # fmt: skip
    with (workdir / f"locust-{file.name}.log").open("ab") as log:
        return subprocess.Popen(_pinned(CLIENT_CORE, args), cwd=workdir, stdout=log, stderr=log)


def ceiling(file: File, mock: Mock, workdir: Path, duration_s: float, users: int, burner: Any) -> dict[str, Any]:
    warmup_s, cooldown_s = min(3.0, duration_s / 4), min(1.5, duration_s / 6)
    base = mock.finished()
    proc = _locust(file, mock, workdir, users, duration_s, None)
    deadline = time.monotonic() + 60
    while mock.finished() == base:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"{file.name}: no request finished (see {workdir}/locust-{file.name}.log)")
        time.sleep(0.05)
    first = time.monotonic()

    def sample() -> tuple[float, ...]:
        cores = _core_busy_s()
        return (
            time.monotonic(),
            mock.finished(),
            _cpu_s(proc.pid),
            _cpu_s(mock.proc.pid),
            _cpu_s(burner.pid) if burner else 0.0,
            cores.get(CLIENT_CORE, 0.0),
            cores.get(MOCK_CORE, 0.0),
        )

    # Sampled until Locust exits: its users may stop before -t is up (stock Locust arms the run timer
    # against gevent's stale clock), so the window ends where the mock's count stopped growing.
    samples = [sample()]
    while proc.poll() is None:
        time.sleep(SAMPLE_S)
        samples.append(sample())
    pairs = zip(samples[::-1], samples[-2::-1], strict=False)
    stop_s = next((s[0] for s, prev in pairs if s[1] > prev[1]), first)
    steady = [s for s in samples if first + warmup_s <= s[0] <= stop_s - cooldown_s]
    if len(steady) < 2:
        raise BenchError(f"{file.name}: the run was too short to measure (see {workdir}/locust-{file.name}.log)")
    a, b = steady[0], steady[-1]
    wall, done, client, mock_cpu, burn, core_c, core_m = (y - x for x, y in zip(a, b, strict=True))
    return {
        "file": file.name,
        "users": users,
        "window_s": wall,
        "requests": done,
        "rps": done / wall,
        "client_cpu": client / wall,
        "client_cpu_ms_per_request": 1000 * client / done if done else None,
        "rps_per_client_core": done / client if client else None,
        "mock_cpu": mock_cpu / wall,
        "burner_cpu": burn / wall,
        "others_on_client_core": max(0.0, core_c - client) / wall,
        "others_on_mock_core": max(0.0, core_m - mock_cpu - burn) / wall,
    }


def _requests(file: File, trace: Path) -> list[dict[str, Any]]:
    """The trace in one shape for both files: id, start_wall, token_walls, ttft_bound_ms, read_lag_max_ms."""
    out = []
    for line in trace.read_text().splitlines() if trace.exists() else []:
        rec = json.loads(line)
        if rec.get("error"):
            continue
        if file.name == "minimal":
            walls = rec["token_walls"]
        else:
            if rec.get("ttft_ms") is None:
                continue
            walls = [rec["start_wall"] + rec["ttft_ms"] / 1000.0]
            for gap_ms in rec["itl_ms"]:
                walls.append(walls[-1] + gap_ms / 1000.0)
        out.append(
            {
                "id": rec["id"],
                "start_wall": rec["start_wall"],
                "token_walls": walls,
                "ttft_bound_ms": rec.get("ttft_bound_ms"),
                "read_lag_max_ms": rec.get("read_lag_max_ms"),
            }
        )
    return out


def accuracy(file: File, mock: Mock, workdir: Path, duration_s: float, streams: int) -> dict[str, Any]:
    warmup_s = min(3.0, duration_s / 4)
    trace = workdir / f"trace-{file.name}-{streams}-{time.monotonic_ns()}.jsonl"
    mock.clear_timings()
    proc = _locust(file, mock, workdir, streams, duration_s, trace)
    core0, cpu = _core_busy_s().get(CLIENT_CORE, 0.0), 0.0
    wall0 = time.monotonic()
    while proc.poll() is None:  # /proc/PID is gone once it is reaped: its CPU is sampled until then
        cpu = _cpu_s(proc.pid)
        time.sleep(SAMPLE_S / 5)
    others = max(0.0, _core_busy_s().get(CLIENT_CORE, 0.0) - core0 - cpu) / (time.monotonic() - wall0)
    sent = mock.timings()
    records = _requests(file, trace)
    t0 = min((r["start_wall"] for r in records), default=0.0)
    ttft_err: list[float] = []
    token_err: list[float] = []
    bounds: list[float] = []
    covered = judged = skipped = 0
    missed: list[dict[str, Any]] = []
    write_ms: list[float] = []
    for rec in records:
        server, written = sent.get(rec["id"], ([], []))
        client = rec["token_walls"]
        if not server or len(client) != len(server) or rec["start_wall"] < t0 + warmup_s:
            skipped += 1
            continue
        err_ms = (client[0] - server[0]) * 1000.0
        ttft_err.append(err_ms)
        token_err.extend((c - s) * 1000.0 for c, s in zip(client, server, strict=True))
        # The first token left the mock between its clock read and the end of its write.
        wrote_ms = (written[0] - server[0]) * 1000.0 if written else 0.0
        write_ms.append(wrote_ms)
        bound = rec["ttft_bound_ms"]
        if bound is not None:
            judged += 1
            bounds.append(bound)
            # Covered when the client's interval [reading - bound, reading] meets the mock's [read, written].
            if -LOOPBACK_EPSILON_MS <= err_ms <= bound + wrote_ms + LOOPBACK_EPSILON_MS:
                covered += 1
            elif len(missed) < 5:
                missed.append({"id": rec["id"], "error_ms": err_ms, "ttft_bound_ms": bound, "write_ms": wrote_ms,
                               "read_lag_max_ms": rec["read_lag_max_ms"]})  # fmt: skip
    return {
        "file": file.name,
        "streams": streams,
        "requests": len(ttft_err),
        "skipped": skipped,
        "ttft_err_ms": _dist(ttft_err),
        "token_err_ms": _dist(token_err),
        "bound_ms": _dist(bounds),
        "mock_write_ms": _dist(write_ms),
        "others_on_client_core": others,
        "bound_judged": judged,
        "bound_covered": covered,
        "bound_missed": missed,
    }


def _dist(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "p50": None, "p99": None, "max": None}
    return {"min": min(values), "p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values)}


def _ms(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.2f}"


def _ratio(ours: float | None, minimal: float | None) -> str:
    return f"{ours / minimal:.3g}x" if ours is not None and minimal else "  n/a"


def _median(runs: list[dict[str, Any]], *keys: str) -> float | None:
    values = []
    for run in runs:
        value: Any = run
        for key in keys:
            value = value[key]
        if value is not None:
            values.append(value)
    return statistics.median(values) if values else None


def _ceiling_line(r: dict[str, Any]) -> str:
    return (
        f"   {r['file']:7s} {r['rps']:7,.0f} req/s finished | {r['client_cpu_ms_per_request'] or 0:.3f} ms client "
        f"CPU/request = {r['rps_per_client_core'] or 0:,.0f} req/s per client core | client core "
        f"{100 * r['client_cpu']:3.0f}% Locust + {100 * r['others_on_client_core']:2.0f}% others | mock core "
        f"{100 * r['mock_cpu']:3.0f}% mock + {100 * r['burner_cpu']:2.0f}% burner + "
        f"{100 * r['others_on_mock_core']:2.0f}% others{' (disturbed)' if _disturbed(r) else ''}"
    )


def _disturbed(run: dict[str, Any]) -> bool:
    return bool(run["others_on_client_core"] > DISTURBED_SHARE)


def _steady(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs no other process disturbed, or all of them when every one was."""
    return [r for r in runs if not _disturbed(r)] or runs


def _accuracy_line(r: dict[str, Any]) -> str:
    t, k = r["ttft_err_ms"], r["token_err_ms"]
    line = (
        f"   {r['file']:7s} {r['streams']:3d} streams, {r['requests']:5,} requests: TTFT error p50 {_ms(t['p50'])}, "
        f"p99 {_ms(t['p99'])}, max {_ms(t['max'])}, min {_ms(t['min'])} ms | per-token error p50 "
        f"{_ms(k['p50'])}, p99 {_ms(k['p99'])}, max {_ms(k['max'])} ms | others on the client core "
        f"{100 * r['others_on_client_core']:.0f}%"
    )
    if r["file"] == "ours":
        b = r["bound_ms"]
        line += (
            "\n           no bound reported (no ttft_bound_ms in the trace)"
            if not r["bound_judged"]
            else f"\n           bound covered the real error in {r['bound_covered']:,} of {r['bound_judged']:,} "
            f"requests (0 <= error <= ttft_bound_ms + the mock's write time, +-{LOOPBACK_EPSILON_MS} ms); "
            f"bound p50 {_ms(b['p50'])}, p99 {_ms(b['p99'])}, max {_ms(b['max'])} ms; the mock's first-token "
            f"write p99 {_ms(r['mock_write_ms']['p99'])}, max {_ms(r['mock_write_ms']['max'])} ms"
        )
        for miss in r["bound_missed"]:
            line += (f"\n           NOT covered: {miss['id']} error {miss['error_ms']:.2f} ms, bound "
                     f"{miss['ttft_bound_ms']:.2f} ms, the mock's write {miss['write_ms']:.2f} ms "
                     f"(read lag max {miss['read_lag_max_ms']} ms)")  # fmt: skip
    return line


def _order(ours: File, minimal: File, i: int) -> tuple[File, File]:
    # ABBA: neither file always runs first, when the machine's load drifts.
    return (ours, minimal) if i % 2 == 0 else (minimal, ours)


def _summary(results: dict[str, Any], streams: list[int]) -> list[str]:
    ceil = results["ceiling"]
    by = {name: _steady([r for r in ceil if r["file"] == name]) for name in ("ours", "minimal")}
    lines = [
        "\n3. side by side (medians over runs, ceiling over undisturbed runs: "
        + ", ".join(f"{name} {sum(not _disturbed(r) for r in runs) or 'none, so all'}" for name, runs in by.items())
        + "; ratio = ours / minimal)",
        f"   {'':36s} {'ours':>9s} {'minimal':>9s} {'ratio':>7s}",
    ]

    def row(label: str, a: float | None, b: float | None, fmt: str) -> None:
        cells = [format(v, fmt) if v is not None else "n/a" for v in (a, b)]
        lines.append(f"   {label:36s} {cells[0]:>9s} {cells[1]:>9s} {_ratio(a, b):>7s}")

    row("ceiling: finished req/s", _median(by["ours"], "rps"), _median(by["minimal"], "rps"), ",.0f")
    row(
        "ceiling: client CPU ms/request",
        _median(by["ours"], "client_cpu_ms_per_request"),
        _median(by["minimal"], "client_cpu_ms_per_request"),
        ".3f",
    )
    for n in streams:
        acc = {name: [r for r in results["accuracy"] if r["file"] == name and r["streams"] == n] for name in by}
        for key, label in (("ttft_err_ms", "TTFT error"), ("token_err_ms", "per-token error")):
            for stat in ("p50", "p99", "max") if key == "ttft_err_ms" else ("p50", "p99"):
                row(
                    f"{n:3d} streams: {label} {stat} ms",
                    _median(acc["ours"], key, stat),
                    _median(acc["minimal"], key, stat),
                    ".2f",
                )
        row(f"{n:3d} streams: ours' TTFT bound p99 ms", _median(acc["ours"], "bound_ms", "p99"), None, ".2f")
    judged = sum(r["bound_judged"] for r in results["accuracy"] if r["file"] == "ours")
    covered = sum(r["bound_covered"] for r in results["accuracy"] if r["file"] == "ours")
    lines.append(
        f"   ours' own TTFT error bound: covered the real error in {covered:,} of {judged:,} requests"
        if judged
        else "   ours' own TTFT error bound: no bound reported"
    )
    return lines


def _phases(
    args: argparse.Namespace,
    streams: list[int],
    ours: File,
    minimal: File,
    workdir: Path,
    burner: Any,
    results: dict[str, Any],
) -> None:
    """The ceiling runs, then the accuracy runs, each file in turn; each run's line as it ends."""
    print(f"\n1. ceiling: {TOKENS}-token streaming completions, zero server latency, {args.users} users")
    mock = Mock(ttft_ms=0, itl_ms=0, record_timings=False)
    try:
        for i in range(args.ceiling_repeat):
            for file in _order(ours, minimal, i):
                results["ceiling"].append(r := ceiling(file, mock, workdir, args.duration, args.users, burner))
                print(_ceiling_line(r), flush=True)
    finally:
        _stop(mock.proc)
    print("\n2. accuracy: mock TTFT 50 ms, ITL 10 ms; error = client reading - the mock's send time")
    mock = Mock(ttft_ms=50, itl_ms=10, record_timings=True)
    try:
        for n in streams:
            for i in range(args.repeat if n == max(streams) else 1):
                for file in _order(ours, minimal, i):
                    results["accuracy"].append(r := accuracy(file, mock, workdir, args.duration, n))
                    print(_accuracy_line(r), flush=True)
    finally:
        _stop(mock.proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=12.0, help="Seconds per Locust run.")
    parser.add_argument("--users", type=int, default=64, help="Concurrent streams in the ceiling phase.")
    parser.add_argument("--ceiling-repeat", type=int, default=2, help="Ceiling runs per file (alternating).")
    parser.add_argument("--streams", default="32,256", help="Stream counts of the accuracy phase.")
    parser.add_argument("--repeat", type=int, default=3, help="Accuracy runs per file at the largest stream count.")
    parser.add_argument(
        "--busy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Keep the mock's core busy with a CPU burner at nice 19 (default on).",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="Run mock and clients at SCHED_FIFO (chrt -f 10, needs root); the burner stays nice 19.",
    )
    parser.add_argument("--out", type=Path, help="Write the raw results as JSON here.")
    args = parser.parse_args()
    streams = [int(s) for s in args.streams.split(",") if s]
    if args.realtime:
        if not shutil.which("chrt"):
            parser.error("--realtime needs chrt (util-linux)")
        REALTIME[:] = ["chrt", "-f", "10"]
    workdir = Path(tempfile.mkdtemp(prefix="loadgen-"))
    ours, minimal = _files(workdir)
    load_before = os.getloadavg()
    print(f"machine: {machine()}")
    print(
        f"core {MOCK_CORE}: the mock{' + a CPU burner at nice 19' if args.busy else ''}; core {CLIENT_CORE}: "
        f"Locust (ours or minimal, one at a time){'; mock and Locust SCHED_FIFO' if args.realtime else ''}; "
        f"{args.duration:g} s per run"
    )
    print("load average before: " + " ".join(f"{v:.2f}" for v in load_before))
    busy0, self0 = sum(_core_busy_s().values()), _own_cpu_s()
    wall0 = time.monotonic()
    burner = None
    if args.busy:
        burner = subprocess.Popen(["nice", "-n", "19", "taskset", "-c", str(MOCK_CORE), sys.executable, "-c", BURNER])
    results: dict[str, Any] = {
        "machine": machine(),
        "args": vars(args) | {"out": str(args.out)},
        "ceiling": [],
        "accuracy": [],
    }
    try:
        _phases(args, streams, ours, minimal, workdir, burner, results)
    except BenchError as exc:
        print(f"loadgen benchmark: {exc}", file=sys.stderr)
        return 1
    finally:
        if burner is not None:
            _stop(burner)
    print("\n".join(_summary(results, streams)))
    wall = time.monotonic() - wall0
    others = max(0.0, sum(_core_busy_s().values()) - busy0 - (_own_cpu_s() - self0))
    results["load_before"], results["load_after"] = load_before, os.getloadavg()
    results["others_share"] = others / wall / (os.cpu_count() or 1)
    print(
        "\n4. machine: load average before "
        + " ".join(f"{v:.2f}" for v in load_before)
        + ", after "
        + " ".join(f"{v:.2f}" for v in results["load_after"])
        + f"; processes other than this benchmark's used {others:.0f} CPU-s in {wall:.0f} s "
        f"= {100 * results['others_share']:.0f}% of the machine"
    )
    out = args.out or workdir / "results.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"raw results: {out}")
    return 0


def _own_cpu_s() -> float:
    """CPU of this script and every child it has waited for (mock, burner, Locust runs)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


if __name__ == "__main__":
    sys.exit(main())
