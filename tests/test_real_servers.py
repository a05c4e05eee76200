"""The conformance tier: every user path against real inference servers that nobody here wrote.

llama-cpp-python's server, llama.cpp's own llama-server and vLLM on CPU serve the same tiny Qwen2
model (tests/realservers/make_model.py: the real Qwen2 tokenizer and chat template, weights that
make every chat reply "Hello! How can I help?" and end by itself, and every completion run on).
What a user relies on is asserted: no false errors on a healthy server, TTFT and ITL measured,
tokens marked estimated exactly when the server sent no usage, `truncated` exactly when
finish_reason is "length", alerts that fire on a real condition and stay quiet otherwise, and the
doctor's verdicts. Servers are built by tests/realservers/build.sh; a missing one is skipped on a
laptop and fails the run in CI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from monitor.store.db import connect
from monitor.store.models import ProbeResultRow as R
from tests.mockserver import REPO_ROOT
from tests.realservers.servers import MODEL_NAME, SERVERS, RealServer
from tests.receivers import WebhookReceiver

pytestmark = [pytest.mark.real, pytest.mark.timeout(600)]

REPLY = "Hello! How can I help?"  # what the tiny model's weights spell after the chat template
LOADTEST_TIMEOUT_S = 180


@pytest.fixture(name="server", scope="module", params=list(SERVERS))
def fix_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    spec = SERVERS[request.param].require()
    with RealServer(spec, tmp_path_factory.mktemp(spec.name)) as server:
        yield server


def _monitor(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s
    )


def _config(tmp_path: Path, server: RealServer, extra: str = "") -> Path:
    path = tmp_path / "monitor.yaml"
    probes = []
    for endpoint in ("chat", "completion"):
        for stream in (True, False):
            name = f"{endpoint}-{'stream' if stream else 'nostream'}"
            payload = "messages: [{role: user, content: 你好}]" if endpoint == "chat" else "prompt: 你好"
            probes.append(
                f"  - {{name: {name}, target: real, endpoint: {endpoint}, {payload}, max_tokens: 24,"
                f" stream: {str(stream).lower()}, interval_s: 1}}"
            )
    path.write_text(
        f"targets:\n  - {{name: real, base_url: {server.base_url}, model: {MODEL_NAME}, timeout_s: 60}}\n"
        "probes:\n" + "\n".join(probes) + "\n" + extra,
        encoding="utf-8",
    )
    return path


def _post(url: str, body: dict[str, Any]) -> bytes:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        raw: bytes = resp.read()
        return raw


def _stream_has_usage(server: RealServer, endpoint: str) -> bool:
    """Ground truth, read off the wire by hand: does this server send usage in a stream?"""
    path, payload = (
        ("/chat/completions", {"messages": [{"role": "user", "content": "你好"}]})
        if endpoint == "chat"
        else ("/completions", {"prompt": "你好"})
    )
    body = {"model": MODEL_NAME, **payload, "max_tokens": 24, "stream": True, "stream_options": {"include_usage": True}}
    for line in _post(server.base_url + path, body).decode().splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            if json.loads(line[5:]).get("usage"):
                return True
    return False


def test_probe_every_endpoint_and_stream_mode(server: RealServer, tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'probe.db'}"
    proc = _monitor("probe", "-c", str(_config(tmp_path, server)), "--db", db, "--json")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = {r["probe"]: r for r in json.loads(proc.stdout)}
    assert set(results) == {"chat-stream", "chat-nostream", "completion-stream", "completion-nostream"}
    usage_in_stream = {e: _stream_has_usage(server, e) for e in ("chat", "completion")}
    for r in results.values():
        assert r["ok"] and r["error_kind"] is None and r["http_status"] == 200, r
        assert r["truncated"] == (r["finish_reason"] == "length"), r
        assert r["latency_ms"] > 0 and r["completion_tokens"] > 0, r
        if r["stream"]:
            assert r["ttft_ms"] is not None and 0 < r["ttft_ms"] <= r["latency_ms"], r
            assert r["itl_ms_mean"] is not None, r
            assert r["tokens_estimated"] == (not usage_in_stream[r["endpoint"]]), (r, usage_in_stream)
        else:
            assert r["tokens_estimated"] is False, r  # every server here sends usage without streaming
        if r["endpoint"] == "chat":
            assert r["finish_reason"] == "stop" and r["text"].strip() == REPLY, r
            assert all(c["passed"] for c in r["checks"]), r["checks"]
        else:  # no chat template: the model continues the text until max_tokens
            assert r["finish_reason"] == "length" and r["completion_tokens"] == 24, r


async def test_daemon_alerts_on_a_real_condition_and_stays_quiet_otherwise(server: RealServer, tmp_path: Path) -> None:
    async with WebhookReceiver() as hook:
        rules = f"""
rules:
  - {{name: any-error, kind: threshold, metric: error_rate, agg: rate, window: 1m, op: ">", value: 0, min_samples: 1}}
  - {{name: failing, kind: consecutive_failures, count: 1}}
  - {{name: completions-cut, kind: threshold, scope: {{probe: completion-nostream}}, metric: truncation_rate,
      agg: rate, window: 1m, op: ">=", value: 1, min_samples: 2}}
receivers:
  - {{name: hook, format: generic, url: {hook.url}}}
api: {{port: 0}}
"""
        config = _config(tmp_path, server, rules)
        db = f"sqlite+aiosqlite:///{tmp_path / 'daemon.db'}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor", "run", "-c", str(config), "--db", db,
            cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            (first,) = await hook.wait_for(1, timeout_s=90)
            await asyncio.sleep(3)  # a few more rounds of every probe, for any false alarm to show
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
        log = out.decode(errors="replace")
        assert proc.returncode == 0, log[-3000:]
        names = [_alertname(r.json) for r in hook.received]
        assert first.json is not None and first.json["status"] == "firing", first.json
        assert set(names) == {"completions-cut"}, (names, await _failed_runs(db), log[-3000:])
        assert "Traceback" not in log, log[-3000:]


async def _failed_runs(db_url: str) -> list[tuple[Any, ...]]:
    """The stored runs that failed, for a failure message: what the daemon saw go wrong."""
    engine = await connect(db_url, connect_retries=0)
    try:
        async with engine.connect() as conn:
            columns = (R.started_at, R.probe, R.error_kind, R.error_detail, R.http_status, R.latency_ms, R.checks)
            return [tuple(row) for row in (await conn.execute(select(*columns).where(R.ok.is_(False)))).all()]
    finally:
        await engine.dispose()


def _alertname(doc: Any) -> str:
    text = json.dumps(doc)
    for name in ("completions-cut", "any-error", "failing"):
        if f'"{name}"' in text:
            return name
    return text[:200]


def test_doctor_verdicts(server: RealServer, tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'doctor.db'}"
    proc = _monitor("doctor", "--base-url", server.base_url, "--model", MODEL_NAME, "--db", db, "--json")
    report = json.loads(proc.stdout)
    status = {c["id"]: c["status"] for c in report["checks"]}
    # On failure, each check's verdict and summary (pytest would elide the report dict), and the server's log.
    why = "\n".join(f"{c['id']}: {c['status']}: {c['summary']}" for c in report["checks"]) + "\n" + server.log_tail(20)
    # A correctly configured server: it serves the model, applies the chat template on chat and not on
    # completions, and stops on <|im_end|>.
    assert status["reachable"] == "pass", why
    assert status["chat_template"] == "pass", why
    # llama-server sets no default max_tokens on completions: it generates until the context is full (or
    # the doctor's 30 s bound), which the doctor warns about; vLLM (16) and llama-cpp-python (16) have one.
    expected = "warn" if server.spec.name == "llama-server" else "pass"
    assert status["endpoint_semantics"] == expected, why
    assert status["stop_tokens"] == "pass", why
    # The tiny model cannot recall a name (multi_turn warns, truthfully), and llama.cpp takes temperature -1
    # as greedy decoding (limits warns); nothing on a healthy server may fail.
    assert "fail" not in status.values(), json.dumps(report, ensure_ascii=False, indent=1)[-4000:]
    assert proc.returncode == 0, proc.stderr[-2000:]


def _loadtest(server: RealServer, tmp_path: Path, *args: str) -> dict[str, Any]:
    db = f"sqlite+aiosqlite:///{tmp_path / 'load.db'}"
    proc = _monitor(
        "loadtest", "--base-url", server.base_url, "--model", MODEL_NAME, "--db", db, "--max-tokens", "16",
        "--slo", "error_rate<=0", "--json", *args, timeout_s=LOADTEST_TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc: dict[str, Any] = json.loads(proc.stdout)
    metrics = doc["summary"]["metrics"]
    assert doc["verdict"] == "pass", doc["summary"]
    assert metrics["requests"] > 0 and metrics["error_rate"] == 0, doc["summary"]
    assert metrics["ttft_p95_ms"] is not None and metrics["itl_p95_ms"] is not None, metrics
    (tmp_path / "loadtest.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return doc


def test_loadtest_closed_loop_30s_both_endpoints(server: RealServer, tmp_path: Path) -> None:
    doc = _loadtest(server, tmp_path, "--users", "4", "--duration", "30s", "--endpoint", "both")
    assert set(doc["summary"]["endpoints"]) == {"chat", "completion"}, doc["summary"]["endpoints"]


@pytest.mark.parametrize("endpoint", ["chat", "completion"])
def test_loadtest_open_loop(server: RealServer, tmp_path: Path, endpoint: str) -> None:
    doc = _loadtest(server, tmp_path, "--rate", "4", "--duration", "8s", "--endpoint", endpoint)
    assert set(doc["summary"]["endpoints"]) == {endpoint}


def test_loadtest_two_workers(server: RealServer, tmp_path: Path) -> None:
    doc = _loadtest(server, tmp_path, "--users", "4", "--duration", "8s", "--workers", "2")
    assert doc["params"]["workers"] == 2


def test_llama_cpp_python_default_interrupts_are_named(tmp_path: Path) -> None:
    """llama-cpp-python's default --interrupt_requests True aborts a running stream when another request
    arrives ([DONE] after the role chunk, then a dropped connection). Concurrent probes see it; the result
    must say what happened and how to fix it, not just "connection closed"."""
    spec = SERVERS["llama-cpp-python"].require()

    def default_argv(root: Path, port: int) -> list[str]:
        argv = spec.argv(root, port)
        i = argv.index("--interrupt_requests")
        return argv[:i] + argv[i + 2 :]

    with RealServer(dataclasses.replace(spec, argv=default_argv), tmp_path) as server:
        db = f"sqlite+aiosqlite:///{tmp_path / 'probe.db'}"
        proc = _monitor("probe", "-c", str(_config(tmp_path, server)), "--db", db, "--json")
    results = json.loads(proc.stdout)
    aborted = [r for r in results if r["error_kind"] == "stream_error"]
    assert aborted, results  # four concurrent probes: every stream but the last one is cut
    for r in aborted:
        assert "aborted the stream" in r["error_detail"] and "--interrupt_requests False" in r["error_detail"], r


# Workloads (issue 16): what each server offers to count tokens, and whether it obeys ignore_eos.
TOKEN_SOURCE = {"vllm": "server /tokenize", "llama-server": "server /tokenize",
                "llama-cpp-python": "server /extras/tokenize"}  # fmt: skip


def test_loadtest_synthetic_lengths(server: RealServer, tmp_path: Path) -> None:
    lengths = ("--input-tokens", "uniform:32:96", "--output-tokens", "12", "--ignore-eos", "--seed", "1")
    doc = _loadtest(server, tmp_path, "--users", "2", "--duration", "8s", "--endpoint", "chat", *lengths)
    workload = doc["summary"]["workload"]
    assert workload["kind"] == "synthetic" and workload["token_source"] == TOKEN_SOURCE[server.spec.name], workload
    if workload["eos"].startswith("honoured"):
        assert doc["summary"]["lengths"]["output"]["p50"] == 12, (workload, doc["summary"]["lengths"])
    else:  # the server ignores ignore_eos: a warning, and the replies end by themselves
        assert any("--ignore-eos" in w for w in workload["warnings"]), workload


def test_loadtest_sessions_and_prefixes(server: RealServer, tmp_path: Path) -> None:
    doc = _loadtest(server, tmp_path, "--users", "2", "--duration", "8s", "--endpoint", "chat", "--turns", "3",
                    "--input-tokens", "16", "--shared-prefixes", "2", "--prefix-tokens", "64")  # fmt: skip
    assert [row["turn"] for row in doc["summary"]["turns"]][:3] == [1, 2, 3], doc["summary"]["turns"]
    assert doc["summary"]["workload"]["token_source"] == TOKEN_SOURCE[server.spec.name]


def test_loadtest_trace_replay(server: RealServer, tmp_path: Path) -> None:
    trace = tmp_path / "mooncake.jsonl"
    rows = [{"timestamp": 500 * i, "input_length": 40 + 200 * (i % 2), "output_length": 8, "hash_ids": [1, 10 + i]}
            for i in range(8)]  # fmt: skip
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    doc = _loadtest(server, tmp_path, "--trace", str(trace), "--trace-speedup", "1", "--duration", "20s",
                    "--endpoint", "chat")  # fmt: skip
    assert doc["summary"]["metrics"]["requests"] == len(rows), doc["summary"]["metrics"]


# Saturation (issue 16): a real server at a low rate keeps up (no false alarm); far past its capacity the
# sweep stops and names the knee. 1 req/s, then 400: the fastest of these servers at 400 offered, vLLM on
# CPU (it batches), finished 96-101 chat replies a second here on two shared cores, llama-server and
# llama-cpp-python 4-21. Most of the 400 wait for one of the 512 slots: they count as offered all the
# same (a sweep that counted only what left ran vLLM's third step, "kept up" at 96 of 400).
def test_loadtest_sweep_stops_at_a_real_servers_saturation(server: RealServer, tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'sweep.db'}"
    proc = _monitor(
        "loadtest", "--base-url", server.base_url, "--model", MODEL_NAME, "--db", db, "--max-tokens", "16",
        "--endpoint", "chat", "--rate", "1", "--sweep", "--sweep-step", "399", "--sweep-steps", "3",
        "--duration", "12s", "--json", timeout_s=LOADTEST_TIMEOUT_S,
    )  # fmt: skip
    assert proc.stdout.strip(), proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    (tmp_path / "sweep.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    sweep = doc["summary"]["sweep"]
    steps = [(s["rate"], s["metrics"]["rps"], s["metrics"]["error_rate"], s["saturation"]) for s in sweep["steps"]]
    assert (proc.returncode, doc["status"]) == (0, "completed"), (steps, proc.stderr[-3000:])
    assert [s["rate"] for s in sweep["steps"]] == [1, 400], steps  # it stopped: the third step never ran
    first, second = sweep["steps"]
    assert first["saturation"] is None and first["metrics"]["error_rate"] == 0, steps
    assert second["saturation"] is not None and second["metrics"]["rps"] < 300, steps
    assert sweep["knee"]["rate"] == 1 and sweep["saturated_at"]["rate"] == 400, sweep
