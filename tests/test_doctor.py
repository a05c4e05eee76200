"""`llm-monitor doctor` against the real mock process: which checks fail in which mode, exit codes, storage."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from monitor.cli_doctor import doctor_settings
from monitor.doctor import CHECK_IDS, DoctorReport, doctor, run_doctor
from monitor.doctor.remedies import detect_family, stop_token_fix
from monitor.errors import ConfigError
from monitor.store.db import connect
from monitor.store.repo import Store
from tests.mockserver import MockProcess

MODEL = "glm-4-9b-chat"
CHAT_SKIPPED = {"stop_tokens": "skip", "truncation": "skip", "streaming": "skip", "multi_turn": "skip",
                "sampling_defaults": "skip", "reasoning_parser": "skip", "tool_parser": "skip",
                "structured_output": "skip"}  # fmt: skip
# GLM-4-9B-Chat served without parsers: it does not reason, and vLLM answers tools with its 400.
NO_PIPELINES = {"reasoning_parser": "skip", "tool_parser": "skip"}


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    full_env.update(env or {})
    full_env["COLUMNS"] = "120"
    return subprocess.run(
        [sys.executable, "-m", "monitor", "doctor", *args], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


async def _diagnose(mock: MockProcess, db_url: str, **flags: Any) -> DoctorReport:
    settings, name = doctor_settings(None, base_url=mock.base_url, model=MODEL, db=db_url, **flags)
    return await doctor(settings, name)


def _not_passing(report: DoctorReport) -> dict[str, str]:
    return {f.id: f.status for f in report.findings if f.status != "pass"}


async def test_healthy_mock_passes_every_check(mock: MockProcess, sqlite_db_url: str) -> None:
    report = await _diagnose(mock, sqlite_db_url)
    assert [f.id for f in report.findings] == list(CHECK_IDS)
    assert _not_passing(report) == NO_PIPELINES, [f.to_json() for f in report.findings if f.status != "pass"]
    assert report.exit_code == 0 and report.max_model_len == 8192
    by_id = {f.id: f for f in report.findings}
    assert "151336" in by_id["stop_tokens"].summary  # stopped on <|user|>, like vLLM with GLM-4's generation config
    assert "16 tokens" in by_id["endpoint_semantics"].response_excerpt
    assert "finish_reason=length" in by_id["truncation"].summary


@pytest.mark.parametrize(
    ("knobs", "expected", "fix_contains"),
    [
        ({"no_chat_template": True}, {"chat_template": "fail", **CHAT_SKIPPED}, ("chat_template", "--chat-template")),
        # The JSON document validates; the text the model writes after it is the stop tokens' fault (check 4).
        ({"no_stop_tokens": True},
         {"stop_tokens": "fail", "sampling_defaults": "warn", "structured_output": "warn", **NO_PIPELINES},
         ("stop_tokens", "stop_token_ids: [151329, 151336, 151338]")),
        ({"leak_special_tokens": True}, {"chat_template": "fail", "stop_tokens": "warn", **NO_PIPELINES},
         ("chat_template", "--chat-template")),
        ({"oversize_500": True}, {"limits": "fail", **NO_PIPELINES}, ("limits", "4xx")),
        ({"no_stream_usage": True}, {"streaming": "warn", **NO_PIPELINES}, ("streaming", "estimates")),
        # A server that accepts connections but drops every generation request is a finding, not exit code 2.
        ({"disconnect_after": 0}, {"chat_template": "fail", "endpoint_semantics": "warn", **CHAT_SKIPPED},
         ("chat_template", "log")),
    ],
    ids=["no_chat_template", "no_stop_tokens", "leak_special_tokens", "oversize_500", "no_stream_usage", "dropped"],
)  # fmt: skip
async def test_each_mode_fails_exactly_its_checks(
    mock: MockProcess,
    sqlite_db_url: str,
    knobs: dict[str, Any],
    expected: dict[str, str],
    fix_contains: tuple[str, str],
) -> None:
    mock.configure(**knobs)
    report = await _diagnose(mock, sqlite_db_url)
    assert _not_passing(report) == expected, [f.to_json() for f in report.findings if f.status != "pass"]
    check_id, text = fix_contains
    finding = next(f for f in report.findings if f.id == check_id)
    assert finding.fix is not None and text in finding.fix
    assert finding.request.startswith("POST /v1/") and finding.response_excerpt
    assert report.exit_code == (1 if "fail" in expected.values() else 0)


async def test_unknown_model_lists_served_models_and_skips_the_rest(mock: MockProcess, sqlite_db_url: str) -> None:
    settings, name = doctor_settings(None, base_url=mock.base_url, model="gpt-4", db=sqlite_db_url)
    report = await doctor(settings, name)
    first = report.findings[0]
    assert first.status == "fail" and MODEL in first.summary and f"--model {MODEL}" in (first.fix or "")
    assert {f.status for f in report.findings[1:]} == {"skip"}
    assert report.results == ()


async def test_results_are_stored_like_probe_results(mock: MockProcess, db_url: str) -> None:
    report = await _diagnose(mock, db_url)
    engine = await connect(db_url)
    try:
        stored = await Store.from_engine(engine).recent_results(target="default", limit=100)
    finally:
        await engine.dispose()
    assert len(stored) == len(report.results) == 17
    # Every check but the reachability one (a plain GET) made requests through the Prober.
    assert {r.probe for r in stored} == {f"doctor.{check_id}" for check_id in CHECK_IDS[1:]}
    limits = [r for r in stored if r.probe == "doctor.limits"]
    assert [r.http_status for r in limits] == [400, 400] and all(r.error_kind == "http_error" for r in limits)


async def test_api_key_is_used_and_never_stored(mock: MockProcess, sqlite_db_url: str, tmp_path: Path) -> None:
    mock.configure(api_key="sk-doctor-secret")
    out = cli("--base-url", mock.base_url, "--model", MODEL, "--db", sqlite_db_url, cwd=tmp_path)
    assert out.returncode == 1 and "--api-key-env" in out.stdout  # check 1: the server wants a key
    out = cli("--base-url", mock.base_url, "--model", MODEL, "--db", sqlite_db_url, "--api-key-env", "DOCTOR_KEY",
              "--json", cwd=tmp_path, env={"DOCTOR_KEY": "sk-doctor-secret"})  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sk-doctor-secret" not in out.stdout + out.stderr
    db_file = Path(sqlite_db_url.split("///", 1)[1])
    for path in db_file.parent.glob(db_file.name + "*"):  # the database, its WAL and shm files
        assert b"sk-doctor-secret" not in path.read_bytes()


def test_json_report_shape(mock: MockProcess, tmp_path: Path) -> None:
    mock.configure(no_stop_tokens=True)
    out = cli("--base-url", mock.base_url, "--model", MODEL, "--json", cwd=tmp_path,
              env={"MONITOR_DB_URL": f"sqlite+aiosqlite:///{tmp_path}/env.db"})  # fmt: skip
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert set(report) >= {"target", "model", "checks", "summary"}
    assert report["target"]["name"] == "default" and report["model"] == MODEL
    assert [c["id"] for c in report["checks"]] == list(CHECK_IDS)
    for check in report["checks"]:
        assert set(check) >= {"id", "title", "status", "evidence", "fix", "details"}
        assert set(check["evidence"]) == {"request", "response_excerpt"}
        assert check["status"] in {"pass", "warn", "fail", "skip"}
    stop = report["checks"][CHECK_IDS.index("stop_tokens")]
    assert stop["status"] == "fail" and "finish_reason=length" in stop["evidence"]["response_excerpt"]
    assert report["summary"] == {"pass": 8, "warn": 2, "fail": 1, "skip": 2, "exit_code": 1}
    assert (tmp_path / "env.db").exists()  # MONITOR_DB_URL chose the database


def test_text_report_shows_evidence_and_fix(mock: MockProcess, sqlite_db_url: str) -> None:
    mock.configure(no_stop_tokens=True)
    settings, name = doctor_settings(None, base_url=mock.base_url, model=MODEL, db=sqlite_db_url)
    console = Console(record=True, width=100)
    assert run_doctor(settings, name, as_json=False, console=console) == 1
    text = console.export_text()
    stop_line = next(line for line in text.splitlines() if " 4. Stop tokens" in line)
    assert stop_line.startswith("FAIL") and "next turn" in stop_line
    assert "request  POST /v1/chat/completions" in text and "151329, 151336, 151338" in text
    assert "8 passed, 2 warnings, 1 failed, 2 skipped" in text
    assert all(line == line.rstrip() for line in text.splitlines())  # copy-paste friendly


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_one_line_exit_2(tmp_path: Path) -> None:
    port = _free_port()
    out = cli("--base-url", f"http://127.0.0.1:{port}/v1", "--model", MODEL, "--db", f"sqlite:///{tmp_path}/d.db",
              cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        f"llm-monitor: error: cannot reach http://127.0.0.1:{port}/v1/models: Connection refused"
    ]


def test_timeout_is_one_line_exit_2(mock: MockProcess, tmp_path: Path) -> None:
    # /v1/models answers at once; generation waits ttft_ms, longer than --timeout-s.
    mock.configure(ttft_ms=3000)
    out = cli("--base-url", mock.base_url, "--model", MODEL, "--timeout-s", "0.5", "--db", f"sqlite:///{tmp_path}/d.db",
              cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"llm-monitor: error: cannot reach {mock.base_url}/chat/completions")
    assert "0.5" in lines[0]


def test_config_file_target_selection(mock: MockProcess, tmp_path: Path) -> None:
    config = {
        "targets": [{"name": "glm4", "base_url": mock.base_url, "model": MODEL},
                    {"name": "other", "base_url": "http://127.0.0.1:1/v1", "model": "x"}],
    }  # fmt: skip
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    db = f"sqlite:///{tmp_path}/d.db"
    with pytest.raises(ConfigError, match="several targets"):
        doctor_settings(path, base_url=None, model=None, db=db)
    with pytest.raises(ConfigError, match="--target: unknown target 'nope'"):
        doctor_settings(path, base_url=None, model=None, db=db, target_name="nope")
    out = cli("-c", str(path), "--target", "glm4", "--db", db, "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["target"]["name"] == "glm4"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    for args in ([], ["--timeout-s", "0", "--base-url", "http://127.0.0.1:1/v1"], ["--base-url", "ftp://x"]):
        out = cli(*args, cwd=tmp_path)
        assert out.returncode == 2, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("llm-monitor: error: ")


def test_model_families_get_their_own_remedy() -> None:
    assert detect_family("glm-4-9b-chat") == "glm"
    assert detect_family("Qwen/Qwen2.5-7B-Instruct") == "chatml"
    assert detect_family("meta-llama/Meta-Llama-3-8B-Instruct") == "llama3"
    assert detect_family("my-model", ("hi<|im_end|>",)) == "chatml"
    assert detect_family("my-model") == "unknown"
    assert "151329, 151336, 151338" in stop_token_fix("glm")
    assert "<|im_end|>" in stop_token_fix("chatml")
    assert "128009" in stop_token_fix("llama3")
    generic = stop_token_fix("unknown")
    assert "<|im_end|>" in generic and "<|eot_id|>" in generic and "--generation-config" in generic
