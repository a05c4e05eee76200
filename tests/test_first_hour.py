"""What a newcomer hits in the first hour: 80-column output, one Ctrl-C in `demo`, `loadtest` without
Locust, links that resolve in a clone, and a quiet mock. Every test runs the real CLI as a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from rich.cells import cell_len

from tests.mockserver import REPO_ROOT, MockProcess
from tests.test_cli_alerts import fire_alert, write_config

WIDTH = 80


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), extra.pop("PYTHONPATH", "")]))
    return {**env, **extra}


def _narrow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI with stdout piped (not a terminal) and COLUMNS=80."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args], cwd=cwd, env=_env(COLUMNS=str(WIDTH)), capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip


def _assert_fits(stdout: str) -> None:
    for line in stdout.splitlines():
        assert cell_len(line) <= WIDTH, f"{cell_len(line)} cells: {line!r}"


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


# --- 10: tables at 80 columns, piped ------------------------------------------------------------------


def test_probe_table_fits_80_columns_with_every_key_value(mock: MockProcess, tmp_path: Path) -> None:
    mock.configure(no_stop_tokens=True)
    db = tmp_path / "m.db"
    out = _narrow("probe", "--base-url", mock.base_url, "--model", "glm-4-9b-chat", "--db", f"sqlite:///{db}",
                  cwd=tmp_path)  # fmt: skip
    assert out.returncode == 1, out.stderr
    _assert_fits(out.stdout)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select probe, ok, ttft_ms, finish_reason from probe_results").fetchall()
    assert len(rows) == 4
    lines = out.stdout.splitlines()
    names = {row[0] for row in rows}
    for probe, ok, ttft_ms, finish in rows:
        # The probe's own lines: the one naming it, up to the next one naming another probe.
        head = next(i for i, line in enumerate(lines) if probe in line.split())
        block = [lines[head]]
        for line in lines[head + 1 : head + 4]:
            if names & set(line.replace(":", " ").split()) or not line.strip():
                break
            block.append(line)
        words = " ".join(block).split()
        assert ("OK" if ok else "FAIL") in words, block
        assert (_ms(ttft_ms) if ttft_ms is not None else "-") in words, block
        assert finish in words, block
    assert "2/4 probes ok" in out.stdout


async def test_alerts_and_silence_list_fit_80_columns(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    await fire_alert(config)
    alerts = _narrow("alerts", "-c", str(config), cwd=tmp_path)
    assert alerts.returncode == 0, alerts.stderr
    _assert_fits(alerts.stdout)
    assert "…" not in alerts.stdout, alerts.stdout
    for value in ("firing", "failing", "chat", "glm4", "critical"):
        assert re.search(rf"\b{value}\b", alerts.stdout), alerts.stdout
    (view,) = json.loads(_narrow("alerts", "--json", "-c", str(config), cwd=tmp_path).stdout)
    assert view["fired_at"][:10] in alerts.stdout

    comment = "vLLM upgrade to 0.10.1 on the staging pool"
    added = _narrow("silence", "add", "--rule", "failing", "--label", "probe=chat", "--for", "2h",
                    "--comment", comment, "--author", "alice", "-c", str(config), cwd=tmp_path)  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = _narrow("silence", "list", "-c", str(config), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    _assert_fits(listed.stdout)
    assert "…" not in listed.stdout, listed.stdout
    for value in ("alertname=failing", "probe=chat", "active", "alice", comment):
        assert value in listed.stdout, listed.stdout
    (silence,) = json.loads(_narrow("silence", "list", "--json", "-c", str(config), cwd=tmp_path).stdout)
    assert silence["ends_at"][:10] in listed.stdout
    # The muted alert says by what, still within 80 columns.
    muted = _narrow("alerts", "-c", str(config), cwd=tmp_path)
    _assert_fits(muted.stdout)
    assert "silence 1" in muted.stdout, muted.stdout


# --- 11 and 16: one Ctrl-C in `demo`, its dashboard URL, no stale lock file ---------------------------


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.mark.timeout(120)
def test_demo_one_ctrl_c_is_one_graceful_stop(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "monitor", "demo", "--duration-s", "300", "--port", "0"], cwd=tmp_path,
        env=_env(COLUMNS=str(WIDTH)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        header: list[str] = []
        while not any(line.startswith("  results ") for line in header):
            line = process.stdout.readline()
            assert line, header
            header.append(line)
        results_url = next(line.split()[1] for line in header if line.startswith("  results "))
        # Wait until a few probes ran, so a run is likely in flight when the signal lands.
        deadline = time.monotonic() + 60
        while len(_get_json(results_url.replace("limit=5", "limit=3"))) < 3:  # type: ignore[arg-type]
            assert time.monotonic() < deadline, "the demo stored no results"
            time.sleep(0.2)
        dashboard = next(line for line in header if line.startswith("Dashboard: ")).split()[1]
        with urllib.request.urlopen(dashboard, timeout=5) as response:
            assert response.status == 200 and "text/html" in response.headers["Content-Type"]
        process.send_signal(signal.SIGINT)
        rest, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    stdout = "".join(header) + rest
    assert process.returncode == 0, stderr
    assert "second stop" not in stderr and "Traceback" not in stderr and "ERROR" not in stderr, stderr
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", dashboard), dashboard
    done = next(line for line in stdout.splitlines() if line.startswith("Done:"))
    match = re.match(r"Done: (\d+) probe runs? \(([^)]*)\)", done)
    assert match, done
    parts = [re.fullmatch(r"(\d+) (ok|failed|cancelled|errored)\b.*", p.strip()) for p in match.group(2).split(",")]
    assert all(parts), done
    assert int(match.group(1)) == sum(int(p.group(1)) for p in parts if p), done
    _assert_fits(stdout)
    assert (tmp_path / "llm-monitor.db").is_file()
    assert not (tmp_path / "llm-monitor.db.lock").exists(), sorted(p.name for p in tmp_path.iterdir())


# --- 12: loadtest without Locust -----------------------------------------------------------------------


def test_loadtest_without_locust_says_which_extra_and_records_nothing(mock: MockProcess, tmp_path: Path) -> None:
    # An interpreter in which `import locust` fails, as after `pip install -e .` without the extra.
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['locust'] = None\n", encoding="utf-8")
    db = tmp_path / "m.db"
    out = subprocess.run(
        [sys.executable, "-m", "monitor", "loadtest", "--base-url", mock.base_url, "--users", "1",
         "--duration", "5s", "--db", f"sqlite:///{db}"], cwd=tmp_path, env=_env(PYTHONPATH=str(blocker)),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr.splitlines() == [
        "llm-monitor: error: loadtest needs Locust, which is not installed: pip install 'llm-monitor[load]'"
    ], out.stderr
    if db.exists():
        with sqlite3.connect(db) as conn:
            tables = {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}
            if "load_runs" in tables:
                assert conn.execute("select count(*) from load_runs").fetchone() == (0,)


# --- 13: every relative link resolves inside the repository --------------------------------------------

_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_every_relative_link_in_the_docs_resolves_in_the_repo() -> None:
    documents = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    assert len(documents) > 1, "docs/*.md is missing"
    broken: list[str] = []
    for document in documents:
        text = document.read_text(encoding="utf-8")
        for target in _LINK.findall(text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same file
            path = (document.parent / target.split("#", 1)[0]).resolve()
            if not path.is_relative_to(REPO_ROOT) or not path.exists():
                broken.append(f"{document.relative_to(REPO_ROOT)}: {target}")
        # Paths quoted in backticks that look like repository files must exist too.
        for quoted in re.findall(r"`((?:docs|shared|\.\./)[^`\s]*\.md)`", text):
            if not (REPO_ROOT / quoted).is_file():
                broken.append(f"{document.relative_to(REPO_ROOT)}: `{quoted}`")
    assert not broken, broken


# --- 16: the mock stays quiet when a client hangs up ---------------------------------------------------


def _requests_running(mock: MockProcess) -> float:
    with urllib.request.urlopen(mock.root_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:num_requests_running")
    )


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
def test_mock_logs_no_traceback_when_a_client_hangs_up(mock: MockProcess, stream: bool) -> None:
    """A Locust user stopped mid-request hangs up before the headers or mid-body; the mock logs nothing."""
    mock.configure(ttft_ms=300, itl_ms=5)
    before = len(mock.output)
    body = json.dumps({"messages": [{"role": "user", "content": "你好"}], "stream": stream, "max_tokens": 400})
    request = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
    ).encode()
    port = int(mock.root_url.rsplit(":", 1)[1])
    for linger in (False, True):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request)
            if linger:  # a reset, as from a killed client; otherwise an orderly close
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    # Both requests run to their first write, find the socket gone and end.
    deadline = time.monotonic() + 20
    while _requests_running(mock) > 0:
        assert time.monotonic() < deadline, "the mock kept the abandoned requests running"
        time.sleep(0.1)
    output = "".join(mock.output[before:])
    assert "Traceback" not in output and "Error handling request" not in output, output
