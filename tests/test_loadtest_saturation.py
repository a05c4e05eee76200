"""The sweep stops where the server saturates and reports the knee (real mock, real Locust).

The mock's ``max_num_seqs`` is vLLM's batch limit: two requests generate at once, the rest wait in
order, so the server finishes about 2 / (reply time) req/s whatever it is offered; past that its
queue and its TTFT grow. A mock without the limit keeps up with every step of the same sweep: no
false alarm. Neither run has an SLO: the sweep looks for the knee alone (no gate, exit 0)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.mockserver import REPO_ROOT, MockProcess

pytestmark = pytest.mark.load

# 50 ms to the first token, then 15 more 10 ms apart: about 200 ms a reply.
MAX_TOKENS = 16
TTFT_MS, ITL_MS = 50, 10
RUN_TIMEOUT_S = 150


def _sweep(mock: MockProcess, db_url: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """The sweep 4, 20, 36 req/s, 12 s a step, one-line replies of MAX_TOKENS tokens."""
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "loadtest", "--base-url", mock.base_url, "--db", db_url,
         "--endpoint", "chat", "--max-tokens", str(MAX_TOKENS), "--rate", "4", "--sweep", "--sweep-step", "16",
         "--sweep-steps", "3", "--duration", "12s", "--json", *extra],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert proc.stdout.strip(), f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    return proc, json.loads(proc.stdout)


def test_the_sweep_stops_at_a_saturated_server_and_reports_the_knee(mock: MockProcess, sqlite_db_url: str) -> None:
    # Two at a time, ~200 ms each: ~10 req/s. Offered 4, then 20: the second step is twice past it, and
    # the third (36) never runs.
    mock.configure(ttft_ms=TTFT_MS, itl_ms=ITL_MS, max_num_seqs=2)
    proc, doc = _sweep(mock, sqlite_db_url)
    assert (proc.returncode, doc["status"], doc["verdict"]) == (0, "completed", None), proc.stderr[-3000:]
    sweep = doc["summary"]["sweep"]
    steps = sweep["steps"]
    assert [s["rate"] for s in steps] == [4, 20], [(s["rate"], s["saturation"]) for s in steps]
    assert [s["kept_up"] for s in steps] == [True, False], [s["saturation"] for s in steps]
    assert steps[-1]["saturation"]["kind"] in {"behind", "in_flight", "queueing"}
    # The server's finished rate stayed near its capacity, well below the 20 offered.
    assert steps[-1]["metrics"]["rps"] < 14
    assert sweep["knee"] == {"index": 0, "rate": 4, "finished_rps": steps[0]["metrics"]["rps"]}
    assert sweep["saturated_at"]["step"] == 2 and sweep["saturated_at"]["rate"] == 20
    assert sweep["saturated_at"]["detail"] == steps[-1]["saturation"]["detail"]
    assert f"-> SATURATED ({steps[-1]['saturation']['detail']})" in proc.stderr
    assert sweep["goodput_rps"] is None  # goodput needs an SLO
    # The server's own view (its /metrics, scraped during the run) agrees: two running, a queue waiting.
    server = doc["summary"]["server"]["metrics"]
    assert server["server_running_max"] == 2 and server["server_queue_max"] > 10, server


def test_a_server_that_keeps_up_runs_every_step_without_a_false_alarm(mock: MockProcess, sqlite_db_url: str) -> None:
    mock.configure(ttft_ms=TTFT_MS, itl_ms=ITL_MS)  # no batch limit: every request generates at once
    proc, doc = _sweep(mock, sqlite_db_url, "--slo", "e2e_p95_ms<=2000", "--no-server-metrics")
    sweep = doc["summary"]["sweep"]
    assert [s["saturation"] for s in sweep["steps"]] == [None, None, None], sweep["steps"]
    assert sweep["knee"] is None and sweep["saturated_at"] is None
    assert (proc.returncode, doc["status"], sweep["goodput_rps"]) == (0, "passed", 36), proc.stderr[-3000:]
