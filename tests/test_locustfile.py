"""The locustfiles run as plain Locust against the real mock process (never imported here: gevent patches)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from monitor.loadtest.process import free_port
from monitor.loadtest.recorder import EventTail, RunData
from monitor.loadtest.window import hist_percentile
from tests.mockserver import REPO_ROOT, MockProcess

pytestmark = pytest.mark.load

LOCUSTFILES = REPO_ROOT / "locustfiles"
RUN_TIMEOUT_S = 40


def _locust(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "locust", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )  # fmt: skip


def _events(path: Path) -> RunData:
    data = RunData()
    for line in EventTail(path).read_new():
        data.apply(line)
    return data


def test_plain_locust_run_exits_0_with_llm_entries(mock: MockProcess, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    proc = _locust(
        "-f", str(LOCUSTFILES / "llm.py"), "--headless", "-u", "2", "-r", "2", "-t", "5s",
        "--host", mock.root_url, "--exit-code-on-error", "1", "--llm-out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for entry in ("E2E chat", "TTFT chat", "TTFA chat", "ITL chat", "tokens/s chat", "E2E completion"):
        assert f"LLM      {entry}" in proc.stderr, entry
    assert "reasoning tokens/s" not in proc.stderr  # the default mock does not reason
    data = _events(out)
    assert data.t0 is not None and data.summary is not None
    window = data.window()
    assert window.requests > 10 and window.failures == 0
    assert window.output_tokens > 0 and window.estimated_tokens == 0  # usage came from the server
    locust_e2e = sum(e["requests"] for e in data.summary["locust"] if e["name"].startswith("E2E"))
    assert locust_e2e == window.requests  # Locust's table and llm-monitor's windows count the same requests


def test_a_slow_import_does_not_cut_the_run_time(mock: MockProcess, tmp_path: Path) -> None:
    """Locust arms --run-time on gevent's cached clock; a locustfile import slower than the run ended it at once."""
    slow = tmp_path / "slow_import.py"
    slow.write_text("import time\n\ntime.sleep(2.5)  # a busy machine importing pydantic, rich, ...\n")
    out = tmp_path / "events.jsonl"
    proc = _locust(
        "-f", f"{slow},{LOCUSTFILES / 'llm.py'}", "--headless", "-u", "2", "-r", "2", "-t", "2s",
        "--host", mock.root_url, "--exit-code-on-error", "1", "--llm-out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = _events(out)
    assert data.summary is not None
    assert data.summary["elapsed_s"] >= 1.9, data.summary  # was about 0.01 s, with no request sent
    assert data.window().requests > 0


PARSER_COUNTER = """\
import os
from locust import argument_parser, events

_build = argument_parser.get_empty_argument_parser
BUILDS = [0]


def _counted(*args, **kwargs):
    BUILDS[0] += 1
    return _build(*args, **kwargs)


argument_parser.get_empty_argument_parser = _counted


@events.init.add_listener
def _init(environment, **kw):
    at_init = BUILDS[0]

    @environment.events.test_start.add_listener
    def _start(environment, **kw):  # fired by the worker's spawn message, after the options are kept
        with open(os.environ["PARSER_BUILDS_OUT"], "a") as out:
            out.write(f"{BUILDS[0] - at_init}\\n")
"""


def test_a_workers_spawn_message_builds_the_argument_parser_once(mock: MockProcess, tmp_path: Path) -> None:
    """Locust 2.47 rebuilt its whole parser once per option of the spawn message (see _locust_fixes)."""
    counter = tmp_path / "parser_counter.py"
    counter.write_text(PARSER_COUNTER)
    builds = tmp_path / "builds.txt"
    port = str(free_port())
    files = f"{counter},{LOCUSTFILES / 'llm.py'}"
    env = {**os.environ, "PARSER_BUILDS_OUT": str(builds)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", files, "--worker", "--master-port", port],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        master = subprocess.run(
            [sys.executable, "-m", "locust", "-f", files, "--master", "--master-bind-host", "127.0.0.1",
             "--master-bind-port", port, "--expect-workers", "1", "--headless", "-u", "1", "-r", "1", "-t", "2s",
             "--host", mock.root_url, "--llm-out", str(tmp_path / "events.jsonl"), "--llm-max-tokens", "4"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
        )  # fmt: skip
        _, worker_err = worker.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        worker.kill()
    assert master.returncode == 0, master.stderr[-3000:]
    # One line from the master's test_start, one from the worker's; without the fix the worker's is 70+.
    counts = [int(line) for line in builds.read_text().split()]
    assert len(counts) == 2 and max(counts) <= 1, (counts, worker_err[-2000:])


def test_host_with_v1_and_per_chunk_usage(mock: MockProcess, tmp_path: Path) -> None:
    """`--host .../v1` works too; with continuous usage every gap of a multi-token chunk is counted."""
    trace = tmp_path / "trace.jsonl"
    proc = _locust(
        "-f", str(LOCUSTFILES / "llm.py"), "--headless", "-u", "1", "-r", "1", "-t", "2s",
        "--host", mock.base_url, "--llm-endpoint", "completion", "--llm-max-tokens", "16", "--llm-trace", str(trace),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert records and all(r["error"] is None for r in records)
    # The mock writes all 16 tokens at once (itl 0): 16 tokens, 15 gaps, whatever the reads.
    assert all(r["tokens"] == 16 and len(r["itl_ms"]) == 15 for r in records)


def test_reasoning_comes_between_the_first_token_and_the_answer(mock: MockProcess, tmp_path: Path) -> None:
    mock.configure(reasoning_model="glm45", itl_ms=5)
    trace, out = tmp_path / "trace.jsonl", tmp_path / "events.jsonl"
    proc = _locust(
        "-f", str(LOCUSTFILES / "llm.py"), "--headless", "-u", "1", "-r", "1", "-t", "2s", "--host", mock.root_url,
        "--llm-endpoint", "chat", "--llm-trace", str(trace), "--llm-out", str(out), "--exit-code-on-error", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert records and all(r["error"] is None for r in records)
    # ~40 reasoning tokens, 5 ms apart, before the first answer token.
    assert all(r["ttfa_ms"] > r["ttft_ms"] + 100 and 0 < r["reasoning_tokens"] < r["tokens"] for r in records)
    assert "LLM      TTFA chat" in proc.stderr and "LLM      reasoning tokens/s chat" in proc.stderr
    window = _events(out).window()
    assert window.reasoned == window.requests == len(records) and window.answerless == 0
    assert window.reasoning_tokens == sum(r["reasoning_tokens"] for r in records)
    ttft, ttfa = hist_percentile(window.ttft, 50.0), hist_percentile(window.ttfa, 50.0)
    assert ttft is not None and ttfa is not None and ttfa > ttft + 100


def test_open_loop_latency_includes_client_queueing(mock: MockProcess, tmp_path: Path) -> None:
    """20 req/s offered, the server takes 200 ms, 2 in flight: at most 10 req/s get served.

    Latency counted from the intended send time keeps growing with the queue, far beyond the
    server's 200 ms; a closed-loop tool would report ~200 ms at a lower rate instead. Every arrival
    counts as offered when it is due, not when a slot lets it leave (the schedule never waits for the
    pool), and its wait for a slot is the slot wait, not the idle generator's send lag.
    """
    mock.configure(ttft_ms=200)
    out = tmp_path / "events.jsonl"
    proc = _locust(
        "-f", str(LOCUSTFILES / "llm_open.py"), "--headless", "-u", "1", "-r", "1", "-t", "5s",
        "--host", mock.root_url, "--llm-out", str(out), "--llm-rate", "20", "--llm-arrival", "constant",
        "--llm-max-inflight", "2", "--llm-endpoint", "chat",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = _events(out)
    window = data.window()
    # 20 a second for 5 s were offered, though at most ~10 a second could leave (it was ~52 when the
    # schedule waited for the pool and counted only what left).
    assert window.sent >= 80 and window.sent > window.requests > 0, (window.sent, window.requests)
    ttft_p95 = hist_percentile(window.ttft, 95.0)
    wait_p95, lag_p95 = hist_percentile(window.wait, 95.0), hist_percentile(window.lag, 95.0)
    assert ttft_p95 is not None and ttft_p95 > 1000.0  # 200 ms of server time plus seconds of queue
    assert wait_p95 is not None and wait_p95 > 500.0 and window.waited > 0
    assert lag_p95 is not None and lag_p95 < wait_p95 / 10, (lag_p95, wait_p95)
    assert any("found all 2 slots in flight and waited" in w for w in data.warnings), data.warnings
    assert not any("behind schedule" in w for w in data.warnings), data.warnings
    assert "LLM      Lag chat" in proc.stderr and "LLM      Wait chat" in proc.stderr


def _summary_entries(data: RunData) -> dict[str, Any]:
    assert data.summary is not None
    return {e["name"]: e for e in data.summary["locust"]}


def test_failures_are_classified_in_locust_and_windows(mock: MockProcess, tmp_path: Path) -> None:
    mock.configure(error_rate=0.3, malformed_rate=0.3, seed=3)
    out = tmp_path / "events.jsonl"
    proc = _locust(
        "-f", str(LOCUSTFILES / "llm.py"), "--headless", "-u", "2", "-r", "2", "-t", "3s",
        "--host", mock.root_url, "--llm-out", str(out), "--llm-endpoint", "chat", "--exit-code-on-error", "0",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = _events(out)
    errors = data.window().errors
    assert errors["http_error"] > 0 and errors["bad_response"] > 0
    assert data.summary is not None
    assert "HTTP 500 with an empty body" in data.summary["error_samples"]["http_error"]
    failures = data.summary["locust_errors"]
    assert any(key.startswith("E2E chat: http_error: HTTP 500") for key in failures)
    assert _summary_entries(data)["E2E chat"]["failures"] == errors.total()
