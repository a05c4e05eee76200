"""`llm-monitor demo` as a user runs it: a fresh directory, no arguments but a short duration."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.mockserver import REPO_ROOT


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["COLUMNS"] = "200"
    return env


def test_demo_fires_and_resolves_an_alert(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "monitor", "demo", "--duration-s", "12", "--port", "0"], cwd=tmp_path, env=_env(),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("  metrics  http://127.0.0.1:") and line.endswith("/metrics") for line in lines)
    assert any(line.startswith("  alerts   http://127.0.0.1:") for line in lines)
    events = [line.split("] ", 1)[1].split()[0] for line in lines if line.startswith("[+")]
    assert events == ["fault:", "FIRING", "fault", "RESOLVED"], out.stdout
    assert "the alert fired and resolved" in out.stdout
    assert "Traceback" not in out.stderr

    # The default database: llm-monitor.db in the current directory, with what happened in it.
    with sqlite3.connect(tmp_path / "llm-monitor.db") as conn:
        ok, failed = conn.execute("select sum(ok), sum(not ok) from probe_results").fetchone()
        delivered = conn.execute("select status from outbox where state = 'delivered' order by id").fetchall()
    assert ok > 0 and failed >= 3
    assert [row[0] for row in delivered] == ["firing", "resolved"]


def test_demo_stops_on_ctrl_c_and_moves_off_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "monitor", "demo", "--duration-s", "300", "--port", str(port)], cwd=tmp_path,
            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            header = [process.stdout.readline() for _ in range(2)]
            assert f"(port {port} was taken)" in header[1], header
            time.sleep(1)
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, stderr
    assert "Done:" in stdout and "did not finish its cycle" in stdout
    assert "Traceback" not in stderr
