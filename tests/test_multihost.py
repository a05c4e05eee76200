"""Distributed load runs across real hosts: the runner (master) in one network namespace, two workers in two
others, the mock in a fourth, all on one switch (tests/netns.py). Without root or iproute2 the module skips,
and under CI it fails instead, like the real-server tier."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import netns

MOCK_PORT = 8000
MASTER_PORT = 5557


@pytest.fixture(scope="module")
def hosts() -> Iterator[netns.Hosts]:
    why = netns.unavailable()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"multi-host tests need network namespaces under CI: {why}")
        pytest.skip(f"multi-host tests: {why}")
    with netns.Hosts(4) as built:
        yield built


@pytest.fixture(scope="module")
def mock(hosts: netns.Hosts) -> Iterator[str]:
    """The mock on the fourth host; its base URL."""
    with netns.mock_on(hosts[3], MOCK_PORT, ttft_ms=5, itl_ms=5):
        yield f"http://{hosts[3].addr}:{MOCK_PORT}/v1"


def _open_files(pid: int) -> set[str]:
    files: set[str] = set()
    for p in netns.process_tree(pid):
        for fd in Path(f"/proc/{p}/fd").glob("*"):
            try:
                files.add(os.readlink(fd))
            except OSError:
                continue
    return files


class Run:
    """One distributed run: the runner on hosts[0], a worker on each of hosts[1:3]."""

    def __init__(
        self, hosts: netns.Hosts, base_url: str, tmp: Path, *, duration_s: int = 8, extra: tuple[str, ...] = ()
    ) -> None:
        self.db = tmp / "runner.sqlite"
        self.workers_db = tmp / "absent" / "workers.sqlite"  # a directory that does not exist: no DB for workers
        # The runner's own files (its Locust workdir, a workload's plan) go here, and each worker sees an empty
        # directory in its place (a tmpfs in a mount namespace of its own): as on another machine.
        self.runner_tmp = tmp / "runner-tmp"
        self.runner_tmp.mkdir()
        master = f"{hosts[0].addr}:{MASTER_PORT}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.runner = netns.popen_in(
            hosts[0],
            [sys.executable, "-m", "monitor", "loadtest", "--base-url", base_url, "--db", f"sqlite+aiosqlite:///{self.db}",
             "--endpoint", "chat", "--users", "8", "--max-tokens", "8", "--duration", f"{duration_s}s",
             "--remote-workers", "2", "--master-host", master, "--no-server-metrics", "--json", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**env, "TMPDIR": str(self.runner_tmp)},
        )  # fmt: skip
        worker_env = {**env, "MONITOR_DB_URL": f"sqlite+aiosqlite:///{self.workers_db}"}
        hide = ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"', str(self.runner_tmp)]
        self.workers = [
            netns.popen_in(
                host,
                [*hide, sys.executable, "-m", "monitor", "loadtest", "--worker", "--master-host", master],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=worker_env,
            )  # fmt: skip
            for host in hosts.hosts[1:3]
        ]
        self.worker_files: set[str] = set()

    def wait_running(self, timeout_s: float = 60) -> None:
        """Until the runner has stored finished requests (the master starts its users only once both workers
        joined). A fixed sleep was not enough on a loaded CI machine: a worker killed before it joined is never
        lost, the master just waits for it and gives up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.runner.poll() is None:
            self.watch_workers()
            if self.db.exists():
                with contextlib.suppress(sqlite3.OperationalError), sqlite3.connect(self.db) as db:
                    if db.execute("select count(*) from load_series where requests > 0").fetchone()[0]:
                        return
            time.sleep(0.5)
        raise AssertionError(f"the run never started: {self._stderr_tail()}")

    def _stderr_tail(self) -> str:
        if self.runner.poll() is None:
            return "(still running)"
        _, err = self.runner.communicate()
        return err[-2000:]

    def watch_workers(self) -> None:
        for w in self.workers:
            if w.poll() is None:
                self.worker_files |= _open_files(w.pid)

    def finish(self, timeout_s: float = 90) -> tuple[int, dict[str, Any], str]:
        deadline = time.monotonic() + timeout_s
        while self.runner.poll() is None and time.monotonic() < deadline:
            self.watch_workers()
            time.sleep(0.5)
        out, err = self.runner.communicate(timeout=max(1.0, deadline - time.monotonic()))
        for w in self.workers:
            try:
                w.wait(timeout=20)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        assert out.strip(), f"exit {self.runner.returncode}, no JSON on stdout; stderr: {err[-2000:]}"
        return self.runner.returncode, json.loads(out), err

    def kill(self) -> None:
        for p in [self.runner, *self.workers]:
            if p.poll() is None:
                p.kill()
                p.wait()

    def db_rows(self) -> dict[str, int]:
        with sqlite3.connect(self.db) as db:
            runs = db.execute("select id from load_runs").fetchall()
            foreign = db.execute("select count(*) from load_series where run_id != ?", (runs[0][0],)).fetchone()
            series = db.execute("select count(*) from load_series").fetchone()
        return {"runs": len(runs), "series": series[0], "foreign_series": foreign[0]}


def _workers_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in doc["summary"]["generator"]["processes"] if p["role"] == "worker"]


def _requests(doc: dict[str, Any]) -> int:
    return sum(int(p.get("requests") or 0) for p in doc["series"])


def test_two_workers_on_two_hosts_and_only_the_runner_writes(hosts: netns.Hosts, mock: str, tmp_path: Path) -> None:
    run = Run(hosts, mock, tmp_path)
    try:
        code, doc, err = run.finish()
    finally:
        run.kill()
    assert code == 0, err[-2000:]
    assert doc["status"] == "completed"
    # Both workers reported to the master from their own hosts: each shipped its CPU seconds.
    workers = _workers_of(doc)
    assert len(workers) == 2 and all(w["cpu_s"] > 0 for w in workers), workers
    assert _requests(doc) > 0
    # The runner alone wrote the DB: one run, all its series; the workers never opened the file, nor made theirs.
    assert run.db_rows() == {"runs": 1, "series": len(doc["series"]), "foreign_series": 0}
    assert run.worker_files and not any(str(run.db) in f for f in run.worker_files)
    assert not run.workers_db.parent.exists()


def test_a_workloads_plan_reaches_workers_that_cannot_read_the_runners_files(
    hosts: netns.Hosts, mock: str, tmp_path: Path
) -> None:
    """The runner writes the plan into its own directory; the master ships its text to each worker."""
    lengths = ("--input-tokens", "24", "--output-tokens", "6", "--ignore-eos", "--seed", "1")
    run = Run(hosts, mock, tmp_path, extra=lengths)
    try:
        code, doc, err = run.finish()
    finally:
        run.kill()
    assert code == 0, err[-2000:]
    summary = doc["summary"]
    assert summary["workload"]["kind"] == "synthetic" and summary["metrics"]["error_rate"] == 0, summary["workload"]
    assert summary["lengths"]["output"]["p50"] == 6 and summary["lengths"]["input"]["p50"] == 24, summary["lengths"]
    workers = _workers_of(doc)
    assert len(workers) == 2 and all(w["cpu_s"] > 0 for w in workers), workers
    assert all(str(run.runner_tmp) not in f for f in run.worker_files)


def test_a_killed_worker_is_reported_and_the_run_goes_on(hosts: netns.Hosts, mock: str, tmp_path: Path) -> None:
    # 25 s: the runner learns of finished requests 3-6 s late (workers report every 3 s), more on a loaded CI
    # machine, and the kill must leave well over Locust's 3 s heartbeat liveness of the run to go on.
    run = Run(hosts, mock, tmp_path, duration_s=25)
    try:
        run.wait_running()  # the workers joined, the users started (the master waits for both before starting)
        victim = run.workers[1]
        for pid in reversed(netns.process_tree(victim.pid)):
            os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        code, doc, err = run.finish()
    finally:
        run.kill()
    assert code == 0, err[-2000:]
    assert doc["status"] == "completed"
    lost = [w for w in doc["summary"].get("warnings", []) if "stopped reporting" in w or " quit " in w]
    assert lost and "the run goes on with 1 worker(s)" in lost[0], doc["summary"].get("warnings")
    assert f"({hosts[2].ns})" in lost[0]  # the worker on the host that was killed, named by its host
    # Requests kept finishing after the kill (seconds well after it, past Locust's 3 s heartbeat liveness).
    after = [p for p in doc["series"] if _ts(p) > killed_at + 4 and int(p.get("requests") or 0) > 0]
    assert after, [(p.get("ts"), p.get("requests")) for p in doc["series"]]


def test_a_run_whose_workers_all_die_ends_early_and_says_so(hosts: netns.Hosts, mock: str, tmp_path: Path) -> None:
    run = Run(hosts, mock, tmp_path, duration_s=60)
    try:
        run.wait_running()
        for victim in run.workers:
            for pid in reversed(netns.process_tree(victim.pid)):
                os.kill(pid, signal.SIGKILL)
        code, doc, err = run.finish(timeout_s=40)  # well before its 60 s: it does not wait for -t
    finally:
        run.kill()
    warnings = doc["summary"].get("warnings", [])
    assert any("every worker is gone" in w for w in warnings), (code, warnings, err[-2000:])
    assert sum("no worker is left" in w or "goes on" in w for w in warnings) == 2, warnings
    assert (code, doc["status"]) == (1, "aborted")  # no generator left: not a pass, whatever it measured
    assert doc["abort_reason"].startswith("every worker is gone"), doc["abort_reason"]


def _ts(point: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(point["ts"]).timestamp()
