"""`llm-monitor loadtest` end to end (real mock process, real Locust, real SQLite), plus its pure parts."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.config import parse_settings
from monitor.errors import ConfigError
from monitor.loadtest.html import render_html
from monitor.loadtest.params import LoadParams
from monitor.loadtest.process import free_port
from monitor.loadtest.prompts import load_prompts
from monitor.loadtest.repo import LoadRun, LoadStore, SeriesPoint
from monitor.loadtest.runner import run_loadtest_async
from monitor.loadtest.shapes import build_shape, level_at, parse_stages
from monitor.loadtest.slo import parse_slo
from monitor.loadtest.summary import outcome_json, print_outcome
from monitor.results import ProbeResult
from monitor.store import Store, create_engine, ensure_schema
from tests.mockserver import REPO_ROOT, MockProcess

RUN_TIMEOUT_S = 60


def _loadtest(*args: str, timeout_s: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", "loadtest", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip


@pytest.fixture(name="engine")
async def fix_engine(sqlite_db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(sqlite_db_url)
    try:
        await ensure_schema(engine)
        yield engine
    finally:
        await engine.dispose()


async def _run(engine: AsyncEngine, run_id: int) -> tuple[LoadRun, list[SeriesPoint]]:
    store = LoadStore.from_engine(engine)
    run = await store.get_run(run_id)
    assert run is not None
    return run, await store.series(run_id)


def _config(tmp_path: Path, mock: MockProcess) -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(
        f"""
targets:
  - name: mock
    base_url: {mock.base_url}
probes:
  - name: canary-chat
    target: mock
    endpoint: chat
    messages: [{{role: user, content: 你好}}]
    max_tokens: 64
""",
        encoding="utf-8",
    )
    return path


def _refusal(stdout: str) -> str:
    """For a failure message: why the gate gave no verdict, and the generator's report it judged."""
    try:
        generator = json.loads(stdout)["summary"]["generator"]
    except (ValueError, KeyError, TypeError):
        return stdout[-2000:]
    return f"\nrefusal: {generator.get('refusal')}\ngenerator: {json.dumps(generator)[:3000]}"


@pytest.mark.load
async def test_passing_run_stores_run_series_and_canaries(
    mock: MockProcess, tmp_path: Path, sqlite_db_url: str, engine: AsyncEngine
) -> None:
    html = tmp_path / "report.html"
    # A server that takes time: against a zero-latency one, the generator itself is the bottleneck (exit 3).
    mock.configure(ttft_ms=20, itl_ms=2)
    # This test is about what a passing run stores, not the gate: the latency thresholds sit far above the
    # generator's own error on a busy CI machine, which the gate rightly refuses past 10 % of the tightest
    # threshold (with four busy processes beside it, ITL error bound p99 140-371 ms: exit 3 at itl<=1000).
    proc = _loadtest(
        "-c", str(_config(tmp_path, mock)), "--db", sqlite_db_url, "--users", "3", "--duration", "4s",
        "--slo", "ttft_p95_ms<=10000,itl_p95_ms<=10000,error_rate<=0.01,canary_ok_rate>=0.5",
        "--canary-interval", "1s", "--json", "--html", str(html),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:] + _refusal(proc.stdout)
    doc = json.loads(proc.stdout)
    assert doc["status"] == "passed" and doc["verdict"] == "pass"
    assert [r["passed"] for r in doc["slo"]] == [True, True, True, True]
    run, series = await _run(engine, doc["run_id"])
    assert run.status == "passed" and run.verdict == "pass" and run.ended_at is not None
    assert run.target == "mock" and run.params["users"] == 3 and run.params["load_model"] == "closed"
    assert run.summary is not None
    requests = run.summary["metrics"]["requests"]
    assert requests > 10
    assert len(series) >= 3 and sum(p.requests for p in series) == requests
    assert [p.t_s for p in series] == sorted({p.t_s for p in series})
    assert any(p.ttft_p95_ms is not None and p.users == 3 for p in series)
    canary = run.summary["canary"]
    assert canary["count"] >= 1 and canary["ok"] == canary["count"]
    linked = [r for r in await Store.from_engine(engine).recent_results() if r.load_run_id == run.id]
    assert len(linked) == canary["count"] and all(r.probe == "canary-chat" for r in linked)
    page = html.read_text(encoding="utf-8")
    assert "<svg" in page and "Time to first token" in page and "http" not in page.split("<body>", 1)[1]


@pytest.mark.load
async def test_failing_slo_exits_1_counts_truncation_and_compares_with_a_baseline(
    mock: MockProcess, sqlite_db_url: str, engine: AsyncEngine
) -> None:
    store = LoadStore.from_engine(engine)
    baseline_id = await store.create_run(
        started_at=datetime.now(UTC) - timedelta(hours=1), target="default", base_url=mock.base_url, model=None,
        params={}, baseline_id=None,
    )  # fmt: skip
    await store.finish_run(
        baseline_id, status="passed", ended_at=datetime.now(UTC) - timedelta(minutes=59), slo=[], verdict="pass",
        summary={"metrics": {"rps": 1.0, "ttft_p95_ms": 1.0, "error_rate": 0.0, "truncation_rate": 0.0}},
    )  # fmt: skip
    mock.configure(ttft_ms=20, itl_ms=5)  # an instant mock saturates the generator: the gate refuses
    proc = _loadtest(
        "--base-url", mock.base_url, "--db", sqlite_db_url, "--endpoint", "chat", "--max-tokens", "3",
        "--users", "2", "--duration", "3s", "--slo", "truncation_rate<=0.05", "--baseline", str(baseline_id),
        "--json",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["status"] == "failed" and doc["verdict"] == "fail"
    assert doc["summary"]["metrics"]["truncation_rate"] == 1.0  # every reply hit max_tokens=3
    assert doc["summary"]["metrics"]["error_rate"] == 0.0  # truncation is measured, not an error
    regressions = {r["metric"]: r for r in doc["baseline"]["regressions"]}
    assert doc["baseline"]["run_id"] == baseline_id
    assert regressions["rps"]["judgement"] == "better" and regressions["truncation_rate"]["judgement"] == "worse"
    run, _ = await _run(engine, doc["run_id"])
    assert run.status == "failed" and run.baseline_id == baseline_id
    assert run.slo == [{"metric": "truncation_rate", "op": "<=", "threshold": 0.05, "value": 1.0, "passed": False}]


@pytest.mark.load
def test_the_targets_max_body_bytes_caps_load_replies(mock: MockProcess, tmp_path: Path, sqlite_db_url: str) -> None:
    config = tmp_path / "monitor.yaml"
    config.write_text(
        f"targets: [{{name: mock, base_url: {mock.base_url}, max_body_bytes: 200}}]\n"
        "probes: [{name: c, target: mock, endpoint: chat, messages: [{role: user, content: hi}]}]\n",
        encoding="utf-8",
    )
    proc = _loadtest(
        "-c", str(config), "--db", sqlite_db_url, "--endpoint", "chat", "--users", "1", "--duration", "2s",
        "--no-canaries", "--json",
    )  # fmt: skip
    summary = json.loads(proc.stdout)["summary"]
    assert proc.returncode == 1, proc.stderr[-3000:]  # every request failed
    assert set(summary["errors"]) == {"body_too_large"} and summary["metrics"]["error_rate"] == 1.0, summary


@pytest.mark.load
async def test_mock_faults_are_classified(mock: MockProcess, sqlite_db_url: str, engine: AsyncEngine) -> None:
    mock.configure(error_rate=0.3, disconnect_after=5, seed=11)
    proc = _loadtest(
        "--base-url", mock.base_url, "--db", sqlite_db_url, "--endpoint", "chat", "--users", "2",
        "--duration", "3s", "--slo", "error_rate<=0.01",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "http_error" in proc.stdout and "stream_error" in proc.stdout
    run, series = await _run(engine, 1)
    assert run.summary is not None
    errors = run.summary["errors"]
    # error_rate: bare 500s; disconnect_after: every other reply breaks off after 5 tokens.
    assert errors["http_error"] > 0 and errors["stream_error"] > 0
    assert errors["http_error"] + errors["stream_error"] == run.summary["metrics"]["failures"]
    assert "HTTP 500 with an empty body" in run.summary["error_samples"]["http_error"]
    assert sum(p.errors.get("http_error", 0) for p in series) == errors["http_error"]


@pytest.mark.load
async def test_sigterm_marks_the_run_aborted(mock: MockProcess, sqlite_db_url: str, engine: AsyncEngine) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "loadtest", "--base-url", mock.base_url, "--db", sqlite_db_url,
        "--users", "2", "--duration", "60s",
        cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        store = LoadStore.from_engine(engine)
        for _ in range(60):  # polls the database the runner writes: up to ~20 s
            if await _has_series(store):
                break
            await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, stderr.decode()[-3000:]
    run, series = await _run(engine, 1)
    assert run.status == "aborted" and run.abort_reason == "interrupted by SIGTERM"
    assert run.ended_at is not None and series and run.summary is not None


async def _has_series(store: LoadStore) -> bool:
    try:
        return bool(await store.series(1))
    except Exception:  # the runner may not have created the schema yet
        return False


@pytest.mark.load
async def test_two_local_workers(mock: MockProcess, sqlite_db_url: str, engine: AsyncEngine) -> None:
    proc = _loadtest(
        "--base-url", mock.base_url, "--db", sqlite_db_url, "--workers", "2", "--users", "4", "--duration", "3s",
        "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["status"] == "completed" and doc["verdict"] is None  # no SLO: no gate
    assert doc["summary"]["metrics"]["requests"] > 0
    generator = doc["summary"]["generator"]
    assert generator["worker_cpu_s"] > 0  # the work happened in the workers
    workers = [p for p in generator["processes"] if p["role"] == "worker"]
    assert len(workers) == 2 and len({p["client_id"] for p in workers}) == 2
    # One count of the workers' CPU: the total is theirs summed, the mean share is theirs averaged.
    assert generator["worker_cpu_s"] == pytest.approx(sum(p["cpu_s"] for p in workers), abs=0.01)
    assert generator["worker_cpu_fraction"] == pytest.approx(sum(p["cpu_fraction"] for p in workers) / 2, abs=0.002)
    _, series = await _run(engine, doc["run_id"])
    assert sum(p.requests for p in series) == doc["summary"]["metrics"]["requests"]


@pytest.mark.load
async def test_sweep_reports_the_highest_sustainable_rate(mock: MockProcess, sqlite_db_url: str) -> None:
    # About 230 ms per reply and 2 generating at once (the server's batch limit): about 9 req/s can be
    # served, not 28. (A client cap of 2 in flight in front of a server with room is the generator's own
    # bottleneck, and the gate refuses it: test_loadtest_saturation.) The tokens come 1 ms apart, not all
    # in one write: the first token then has a read of its own, and a tight TTFT bound.
    mock.configure(ttft_ms=100, itl_ms=1, max_num_seqs=2)
    proc = _loadtest(
        "--base-url", mock.base_url, "--db", sqlite_db_url, "--endpoint", "chat", "--rate", "4", "--sweep",
        "--sweep-step", "8", "--sweep-steps", "4", "--duration", "2s",
        # E2E, not TTFT: the mock sends its headers with the first token, in a read the kernel does not stamp
        # for us, so the TTFT bound of such a request is its whole TTFT and the gate may rightly refuse (exit 3).
        "--arrival", "constant", "--slo", "e2e_p95_ms<=500", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = json.loads(proc.stdout)["summary"]["sweep"]
    steps = sweep["steps"]
    assert steps[0]["rate"] == 4 and steps[0]["passed"]
    assert not steps[-1]["passed"]  # it stopped at the first broken step
    assert all(s["passed"] for s in steps[:-1])
    assert sweep["goodput_rps"] == steps[-2]["rate"] if len(steps) > 1 else sweep["goodput_rps"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slo", "ttft_p95_ms<=500,itl_p95<=50"], "--slo: clause 2 'itl_p95<=50': unknown metric 'itl_p95'"),
        (["--users", "2", "--rate", "3"], "--users and --rate are two load models"),
        (["--sweep", "--rate", "2", "--sweep-steps", "0"], "--sweep-step and --sweep-steps must be positive"),
        (["--duration", "soon"], "'soon': not a duration"),
        (["--shape", "wave"], "--shape: unknown shape 'wave'"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], message: str, sqlite_db_url: str) -> None:
    proc = _loadtest("--base-url", "http://127.0.0.1:9/v1", "--db", sqlite_db_url, *args, timeout_s=30)
    assert proc.returncode == 2
    assert proc.stderr.startswith("llm-monitor: error: ") and message in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_bad_prompts_file_is_a_usage_error(tmp_path: Path, sqlite_db_url: str) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hi"}\n{"messages": "hi"}\n', encoding="utf-8")
    proc = _loadtest("--base-url", "http://127.0.0.1:9/v1", "--db", sqlite_db_url, "--prompts", str(prompts))
    assert proc.returncode == 2
    assert f"--prompts: {prompts}:2: messages: must be a non-empty list" in proc.stderr


# --- pure parts -----------------------------------------------------------------------------------


def test_prompt_files_in_every_accepted_form(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    lines: list[dict[str, Any]] = [
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "你好"}]},
        {"prompt": "Once upon a time"},
        {"conversations": [
            {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
            {"from": "human", "value": "Tell me a joke"}, {"from": "gpt", "value": "..."},
        ]},
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(line, ensure_ascii=False) for line in lines) + "\n\n", encoding="utf-8")
    chat, completion, sharegpt = load_prompts(path)
    assert chat.chat_messages() == lines[0]["messages"] and chat.text == "你好"
    assert completion.chat_messages() == [{"role": "user", "content": "Once upon a time"}]
    assert completion.text == "Once upon a time"
    # ShareGPT: the recorded answer to the last human turn is dropped; the server writes it.
    assert [m["role"] for m in sharegpt.chat_messages()] == ["user", "assistant", "user"]
    assert sharegpt.text == "Tell me a joke"
    array = tmp_path / "sharegpt.json"
    array.write_text(json.dumps([lines[2], lines[1]]), encoding="utf-8")
    assert [p.text for p in load_prompts(array)] == ["Tell me a joke", "Once upon a time"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json}\n", "prompts.jsonl:1: Expecting property name"),
        ('{"prompt": ""}\n', "prompts.jsonl:1: prompt: must be a non-empty string"),
        ('{"prompt": "a"}\n{"conversations": [{"from": "gpt", "value": "x"}]}\n', ":2: conversations: needs"),
        ('{"messages": [{"role": "robot", "content": "x"}]}\n', ":1: messages[0].role: must be one of"),
        ('{"text": "x"}\n', ":1: expected a messages, prompt or conversations field"),
        ("\n\n", "has no prompts"),
    ],
)
def test_bad_prompt_lines_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_prompts(path)
    assert message in str(info.value)


def test_shapes_and_stages() -> None:
    assert [s.level for s in build_shape("step", 50, 100)] == [10, 20, 30, 40, 50]
    spike = build_shape("spike", 100, 50)
    assert [level_at(spike, t) for t in (0, 19.9, 20, 29.9, 30, 49.9, 50)] == [20, 20, 100, 100, 20, 20, None]
    ramp = build_shape("ramp", 60, 60)
    assert [level_at(ramp, t) for t in (0, 30, 59.5)] == [0, 30, 59.5]
    stages = parse_stages("8@30s, ~64@1m,8@0.5m")
    assert [(s.level, s.duration_s, s.ramp) for s in stages] == [(8, 30, False), (64, 60, True), (8, 30, False)]
    assert level_at(stages, 60) == 36  # halfway up the ramp from 8 to 64
    with pytest.raises(ConfigError, match=r"--shape: stage 2 '64': expected LEVEL@DURATION"):
        parse_stages("8@30s,64")


async def test_stale_running_runs_are_aborted_and_canaries_linked(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        await ensure_schema(engine)
        store = LoadStore.from_engine(engine)
        now = datetime.now(UTC)
        old = await store.create_run(started_at=now - timedelta(hours=2), target="t", base_url="http://x/v1",
                                     model=None, params={}, baseline_id=None)  # fmt: skip
        fresh = await store.create_run(started_at=now, target="t", base_url="http://x/v1", model=None, params={},
                                       baseline_id=None)  # fmt: skip
        assert await store.abort_stale(now, grace_s=120) == [old]
        stale = await store.get_run(old)
        assert stale is not None and stale.status == "aborted" and "killed" in (stale.abort_reason or "")
        assert stale.ended_at == now - timedelta(hours=2)
        running = await store.get_run(fresh)
        assert running is not None and running.status == "running"
        probes = Store.from_engine(engine)
        base = {"target": "t", "endpoint": "chat", "stream": True, "max_tokens": None}
        await probes.add_results([
            ProbeResult(probe="before", started_at=now - timedelta(minutes=5), **base),  # type: ignore[arg-type]
            ProbeResult(probe="during", started_at=now + timedelta(seconds=1), **base),  # type: ignore[arg-type]
        ])  # fmt: skip
        assert await store.link_canaries(fresh, now, now + timedelta(minutes=1)) == 1
        stats = await store.canary_stats(fresh)
        assert (stats.count, stats.ok, stats.ok_rate) == (1, 1, 1.0)
    finally:
        await engine.dispose()


@pytest.mark.load
async def test_runner_in_process_open_loop_with_a_shape(mock: MockProcess, sqlite_db_url: str) -> None:
    """The runner, recorder and reports in this process (Locust still runs as a child)."""
    settings = parse_settings(
        {"storage": {"url": sqlite_db_url}, "targets": [{"name": "m", "base_url": mock.base_url}]}
    )
    params = LoadParams(
        target=settings.target("m"), api_key_env=None, endpoint="chat", rate=20.0, arrival="constant",
        shape="~20@2s,10@2s", objectives=parse_slo("ttft_p95_ms<=5000,lag_p95_ms<=1000"), max_tokens=16,
    )  # fmt: skip
    progress = io.StringIO()
    outcome = await run_loadtest_async(settings, params, progress)
    assert outcome.status == "passed" and outcome.exit_code == 0
    assert outcome.params["load_model"] == "open" and outcome.params["stages"] == "~20@2s,10@2s"
    sent = sum(p.sent for p in outcome.series)
    assert 25 <= sent <= 45  # ~20 over the ramp, ~20 over the hold; integer rounding aside
    assert outcome.summary["metrics"]["requests"] == sent
    console = Console(file=io.StringIO(), width=120)
    print_outcome(console, outcome)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "load run 1: passed" in text and "SLO: pass" in text
    page = render_html(outcome)
    assert page.count("<svg width") == 6 + 4 + 1 and "Schedule lag" in page  # client, server, read lag
    assert page.count('class="chart bars"') == 2  # input and output token lengths
    doc = json.loads(json.dumps(outcome_json(outcome)))
    assert doc["series"][0]["t_s"] in (0, 1) and doc["params"]["rate"] == 20.0  # the ramp starts at 0 req/s


@pytest.mark.load
def test_a_worker_stopped_by_sigterm_leaves_no_locust_behind(tmp_path: Path) -> None:
    """`loadtest --worker` becomes the Locust worker: systemd's or docker's SIGTERM reaches Locust itself.
    As the worker's parent, it died and left Locust running, connecting to its master for minutes."""
    port = free_port()  # nothing listens: the worker keeps trying to connect, as before a master starts
    log = tmp_path / "worker.log"
    with log.open("w") as err, subprocess.Popen(
        [sys.executable, "-m", "monitor", "loadtest", "--worker", "--master-host", f"127.0.0.1:{port}"],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=err,
    ) as proc:  # fmt: skip
        try:
            cmdline = Path(f"/proc/{proc.pid}/cmdline")
            deadline = time.monotonic() + 60
            while b"locust" not in cmdline.read_bytes() and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()[-2000:]
                time.sleep(0.1)
            assert b"locust" in cmdline.read_bytes()  # the same pid is now Locust's
            assert not Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()  # and nothing else
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
