"""A load run against a real llama-server started with `--metrics`: its own queue and token rates in the report.

llama.cpp names them its own way (`llamacpp:requests_processing`, `llamacpp:requests_deferred`,
`llamacpp:tokens_predicted_total`) and exposes no KV-cache gauge or latency histograms: those
must come out as not exposed, never as 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mockserver import REPO_ROOT
from tests.realservers.servers import MODEL_NAME, SERVERS, RealServer

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]


@pytest.fixture(name="llama_server", scope="module")
def fix_llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    spec = SERVERS["llama-server"].require()
    with RealServer(spec, tmp_path_factory.mktemp(spec.name)) as server:
        yield server


def test_a_load_run_reports_llama_servers_queue_and_token_rates(llama_server: RealServer, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "loadtest", "--base-url", llama_server.base_url, "--model", MODEL_NAME,
         "--db", f"sqlite+aiosqlite:///{tmp_path / 'load.db'}", "--users", "4", "--duration", "6s",
         "--max-tokens", "16", "--slo", "server_queue_max<=100,error_rate<=0", "--json", "--html", str(html)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + llama_server.log_tail()
    doc = json.loads(proc.stdout)
    server = doc["summary"]["server"]
    assert server["status"] == "measured", server
    sources = server["sources"]
    assert sources["requests_running"] == "llamacpp:requests_processing", sources
    assert sources["requests_waiting"] == "llamacpp:requests_deferred", sources
    assert sources["generation_tokens"] == "llamacpp:tokens_predicted_total", sources
    m = server["metrics"]
    assert m["server_queue_max"] is not None and 1 <= m["server_running_max"] <= 4, m
    assert m["server_generation_tokens_per_s"] > 0 and m["server_prompt_tokens_per_s"] > 0, m
    assert m["server_ttft_p95_ms"] is None and m["server_preemptions"] is None, m  # not exposed by llama.cpp
    assert any(s["server"] and s["server"]["requests_running"] for s in doc["series"]), doc["series"]
    page = html.read_text(encoding="utf-8")
    assert "Server queue" in page and "llamacpp:requests_processing" in page
