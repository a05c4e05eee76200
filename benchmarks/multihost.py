"""Multi-host scaling: finished requests per second with one remote worker, then two, across network namespaces.

The runner (Locust master) is on host a, worker 1 on host b pinned to CPU 0 (``taskset -c 0``), worker 2 on host
c pinned to CPU 1, the mock on host d (tests/netns.py builds the hosts; needs root). The mock answers at once
(``--ttft-ms 0 --itl-ms 0``) with short replies, so a worker's CPU, not the server's pacing, sets the rate.

On a machine with fewer than four idle cores the master, the mock and the machine's other jobs compete with the
workers for the same cores, and the ratio says more about them than about the workers. So by default each
worker gets a fixed CPU budget, ``--worker-cpu`` of its core (a CFS quota on a cgroup of its own: a small
"core" that the workers use up while the target still has room): then the workers are the bottleneck by
construction, as on a cluster of small generator machines, and the ratio measures what adding one gives.
``--worker-cpu 0`` runs them unlimited. Usage, as root:

    .venv/bin/python benchmarks/multihost.py [--duration-s 10] [--users-per-worker 32] [--max-tokens 16]
                                             [--worker-cpu 0.3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _machine import cpu_model

from tests import netns

MOCK_PORT = 8000
MASTER_PORT = 5557
WORKER_EXIT_S = 30.0  # a worker quits when its master does; one that has not by then is killed and reported


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (``/proc/PID/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CFS_PERIOD_US = 100_000
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")


@contextmanager
def cpu_budget(name: str, fraction: float) -> Iterator[Path]:
    """A cgroup whose processes together get at most ``fraction`` of one CPU; yields its ``cgroup.procs``."""
    if (CGROUP_V1_CPU / "cpu.cfs_quota_us").exists():
        root, group = CGROUP_V1_CPU, CGROUP_V1_CPU / name
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(round(fraction * CFS_PERIOD_US)))
    elif "cpu" in (CGROUP_V2 / "cgroup.controllers").read_text().split():
        root, group = CGROUP_V2, CGROUP_V2 / name
        group.mkdir()
        (group / "cpu.max").write_text(f"{round(fraction * CFS_PERIOD_US)} {CFS_PERIOD_US}")
    else:
        raise SystemExit("multihost benchmark: no cgroup CPU controller to set --worker-cpu; pass --worker-cpu 0")
    try:
        yield group / "cgroup.procs"
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            try:
                (root / "cgroup.procs").write_text(pid)
            except OSError:
                continue  # it exited meanwhile
        group.rmdir()


def confine(pid: int, procs: Path) -> None:
    """Move ``pid`` and every descendant into the cgroup (children made later inherit it)."""
    for p in netns.process_tree(pid):
        try:
            procs.write_text(str(p))
        except OSError:
            continue


def _ended(proc: subprocess.Popen[str], timeout_s: float) -> bool:
    """Whether ``proc`` exits within ``timeout_s``; killed (and reaped) if not."""
    try:
        proc.wait(timeout=timeout_s)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


class BenchError(Exception):
    """A run that measured nothing: one line, with what its processes last said."""


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(nothing)"


def run(hosts: netns.Hosts, workers: int, args: argparse.Namespace, tmp: Path, mock_pid: int) -> dict[str, float]:
    mock_cpu_start_s = cpu_s(mock_pid)
    base_url = f"http://{hosts[3].addr}:{MOCK_PORT}/v1"
    master = f"{hosts[0].addr}:{MASTER_PORT}"
    with ExitStack() as logs:  # each process's stderr, in a file; the parent's copies close once all started
        runner = netns.popen_in(
            hosts[0],
            [sys.executable, "-m", "monitor", "loadtest", "--base-url", base_url,
             "--db", f"sqlite+aiosqlite:///{tmp / f'bench-{workers}.sqlite'}", "--endpoint", "chat",
             "--users", str(args.users_per_worker * workers), "--max-tokens", str(args.max_tokens),
             "--duration", f"{args.duration_s}s", "--remote-workers", str(workers), "--master-host", master,
             "--no-server-metrics", "--json"],
            stdout=subprocess.PIPE, stderr=logs.enter_context((tmp / f"runner-{workers}.log").open("w")),
        )  # fmt: skip
        procs = [
            netns.popen_in(
                host,
                [
                    "taskset",
                    "-c",
                    str(cpu),
                    sys.executable,
                    "-m",
                    "monitor",
                    "loadtest",
                    "--worker",
                    "--master-host",
                    master,
                ],
                stdout=subprocess.DEVNULL,
                stderr=logs.enter_context((tmp / f"worker-{workers}-{cpu + 1}.log").open("w")),
            )  # fmt: skip
            for cpu, host in enumerate(hosts.hosts[1 : 1 + workers])
        ]
    with ExitStack() as budgets:
        if args.worker_cpu > 0:
            groups = [budgets.enter_context(cpu_budget(f"llmm-bench-w{i}", args.worker_cpu)) for i in range(workers)]
            for proc, group in zip(procs, groups, strict=True):
                confine(proc.pid, group)  # at once: the worker has not started Locust yet
            time.sleep(3)
            for proc, group in zip(procs, groups, strict=True):
                confine(proc.pid, group)  # and whatever it forked meanwhile, before the users start
        try:
            out, _ = runner.communicate(timeout=args.duration_s + 120)
        except subprocess.TimeoutExpired:
            runner.kill()
            out, _ = runner.communicate()
        lingering = [i + 1 for i, proc in enumerate(procs) if not _ended(proc, WORKER_EXIT_S)]
    try:
        doc = json.loads(out)
        metrics = doc["summary"]["metrics"]
    except (ValueError, KeyError, TypeError):
        doc, metrics = None, {}
    said = "; ".join(f"{log.stem}: {_last_line(log)}" for log in sorted(tmp.glob(f"*-{workers}*.log")))
    if runner.returncode != 0 or doc is None or not metrics.get("requests"):
        raise BenchError(f"the {workers}-worker run finished no request (runner exit {runner.returncode}): {said}")
    if lingering:
        raise BenchError(
            f"worker {lingering} of the {workers}-worker run did not exit {WORKER_EXIT_S:g} s after the runner"
        )
    mock_cpu_run_s = cpu_s(mock_pid) - mock_cpu_start_s
    processes = doc["summary"]["generator"]["processes"]
    cpu = [p for p in processes if p["role"] == "worker"]
    master = [float(p.get("cpu_fraction") or 0) for p in processes if p["role"] == "master"]
    return {
        "rps": float(metrics["rps"]),
        "requests": float(metrics["requests"]),
        "master_cpu_fraction": master[0] if master else 0.0,
        "mock_cpu_s": round(mock_cpu_run_s, 1),
        "worker_cpu_fraction": round(sum(float(p.get("cpu_fraction") or 0) for p in cpu) / max(1, len(cpu)), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=int, default=10)
    parser.add_argument("--users-per-worker", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--worker-cpu", type=float, default=0.3, help="CPU budget of each worker (0: unlimited)")
    args = parser.parse_args()
    for flag in ("duration_s", "users_per_worker", "max_tokens"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')}: must be >= 1")
    if not 0 <= args.worker_cpu <= 1:
        parser.error("--worker-cpu: a fraction of one CPU, 0 to 1 (0: unlimited)")
    why = netns.unavailable()
    if why is not None:
        print(f"multihost benchmark: {why}", file=sys.stderr)
        return 2
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}")
    print(
        f"settings: {args.duration_s} s per run, {args.users_per_worker} users per worker, "
        f"max_tokens {args.max_tokens}, mock ttft 0 ms itl 0 ms, "
        + (f"each worker limited to {args.worker_cpu:.0%} of its CPU" if args.worker_cpu else "workers unlimited")
    )
    results: dict[int, dict[str, float]] = {}
    with (
        netns.Hosts(4) as hosts,
        tempfile.TemporaryDirectory() as tmp,
        netns.mock_on(hosts[3], MOCK_PORT, ttft_ms=0, itl_ms=0) as mock,
    ):
        for workers in (1, 2):
            try:
                results[workers] = run(hosts, workers, args, Path(tmp), mock.pid)
            except BenchError as exc:
                print(f"multihost benchmark: {exc}", file=sys.stderr)
                return 1
            r = results[workers]
            print(
                f"{workers} worker(s): {r['rps']:.1f} finished req/s ({r['requests']:.0f} requests), "
                f"worker CPU {r['worker_cpu_fraction']:.0%} of a core each, master {r['master_cpu_fraction']:.0%}, "
                f"mock {r['mock_cpu_s']:.1f} CPU s over the whole run; "
                f"load average {os.getloadavg()[0]:.2f}"
            )
    print(f"ratio 2 workers / 1 worker: {results[2]['rps'] / results[1]['rps']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
