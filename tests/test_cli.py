"""The CLI as a user runs it: a real subprocess, real mock, real SQLite file."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor import __version__
from tests.mockserver import MockProcess

JSON_KEYS = {
    "probe", "target", "endpoint", "stream", "ok", "error_kind", "http_status", "ttft_ms", "latency_ms",
    "itl_ms_mean", "itl_ms_p95", "prompt_tokens", "completion_tokens", "tokens_estimated", "finish_reason",
    "truncated", "checks",
}  # fmt: skip


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    full_env.update(env or {})
    full_env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "select probe, endpoint, stream, ok, finish_reason from probe_results order by id"
        ).fetchall()


def test_version_and_help(tmp_path: Path) -> None:
    out = cli("--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"llm-monitor {__version__}"
    out = cli("--help", cwd=tmp_path)
    assert out.returncode == 0
    for command in ("probe", "init", "check-config", "mock", "demo", "db"):
        assert command in out.stdout
    assert "--no-stop-tokens" in cli("mock", "--help", cwd=tmp_path).stdout


def test_probe_default_set_against_the_healthy_mock(mock: MockProcess, tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    out = cli("probe", "--base-url", mock.base_url, "--model", "glm-4-9b-chat", "--db", f"sqlite:///{db}", "--json",
              cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert len(results) == 4
    for r in results:
        assert JSON_KEYS <= set(r), JSON_KEYS - set(r)
        assert r["ok"] and r["error_kind"] is None and r["http_status"] == 200
    chat = next(r for r in results if r["endpoint"] == "chat" and r["stream"])
    assert chat["ttft_ms"] > 0 and chat["finish_reason"] == "stop" and chat["tokens_estimated"] is False
    completion = next(r for r in results if r["endpoint"] == "completion" and not r["stream"])
    assert completion["truncated"] is True and completion["finish_reason"] == "length"
    # Every result was stored in the SQLite file the flag named.
    assert sorted(row[0] for row in _rows(db)) == sorted(r["probe"] for r in results)


def test_probe_exit_1_and_table_in_no_stop_tokens_mode(mock: MockProcess, tmp_path: Path) -> None:
    mock.configure(no_stop_tokens=True)
    out = cli("probe", "--base-url", mock.base_url, "--model", "glm-4-9b-chat", "--db", f"sqlite:///{tmp_path}/m.db",
              cwd=tmp_path)  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "llm-monitor probe results" in out.stdout
    assert "run_on" in out.stdout and "probes ok" in out.stdout


def test_config_file_probe_with_json(mock: MockProcess, tmp_path: Path) -> None:
    config = {
        "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/cfg.db"},
        "targets": [{"name": "glm4", "base_url": mock.base_url, "model": "glm-4-9b-chat"}],
        "probes": [
            {"name": "chat-hello", "target": "glm4", "messages": [{"role": "user", "content": "你好"}],
             "max_tokens": 512, "expect": {"finish_reason_in": ["stop"], "not_contains": ["<|user|>"]}},
            {"name": "completion-hello", "target": "glm4", "endpoint": "completion", "prompt": "你好",
             "max_tokens": 7, "stream": False},
        ],
    }  # fmt: skip
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    out = cli("probe", "-c", str(path), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    by_name = {r["probe"]: r for r in json.loads(out.stdout)}
    assert by_name["completion-hello"]["truncated"] and by_name["completion-hello"]["ok"]
    assert by_name["chat-hello"]["ok"]
    assert len(_rows(tmp_path / "cfg.db")) == 2


def test_unreachable_endpoint_is_one_line(tmp_path: Path) -> None:
    port = _free_port()
    out = cli("probe", "--base-url", f"http://127.0.0.1:{port}/v1", "--db", f"sqlite:///{tmp_path}/m.db", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"llm-monitor: error: cannot connect to 127.0.0.1:{port}")
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("probes: [{name: p, target: t, messages: [{role: user, content: hi}], max_tokens: 0}]\n"
         "targets: [{name: t, base_url: 'http://127.0.0.1:1/v1'}]", "probes[0].max_tokens: must be >= 1"),
        ("targets: [{name: t, base_url: 'http://127.0.0.1:1/v1', timeout_s: soon}]",
         "targets[0].timeout_s: 'soon' is not a duration"),
        ("targets: [\n", "invalid YAML at line"),
        ("storage: {url: 'mysql://nope'}\ntargets: []", "mysql://nope"),
    ],
)  # fmt: skip
def test_bad_config_is_one_line_exit_2(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    for command in (["check-config", "-c", str(path)], ["probe", "-c", str(path)]):
        out = cli(*command, cwd=tmp_path)
        assert out.returncode == 2, (command, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        if command[0] == "probe" or "mysql" not in message:
            assert len(lines) == 1 and message in lines[0], out.stderr
        assert "Traceback" not in out.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    for args in (["probe"], ["probe", "--bogus"], ["probe", "--model", "x"], ["mock", "--error-rate", "2"]):
        out = cli(*args, cwd=tmp_path)
        assert out.returncode == 2, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert out.stderr.startswith("llm-monitor: error: ")


def test_init_output_passes_check_config(tmp_path: Path) -> None:
    out = cli("init", cwd=tmp_path)
    assert out.returncode == 0
    (tmp_path / "monitor.yaml").write_text(out.stdout, encoding="utf-8")
    out = cli("check-config", "-c", "monitor.yaml", cwd=tmp_path)
    assert out.returncode == 0 and "ok (1 targets, 2 probes, 8 rules, 1 receivers, 1 maintenance windows)" in out.stdout


def test_db_url_env_var_is_honoured(mock: MockProcess, tmp_path: Path) -> None:
    db = tmp_path / "env.db"
    out = cli("probe", "--base-url", mock.base_url, "--probe", "chat-hello-stream", cwd=tmp_path,
              env={"MONITOR_DB_URL": f"sqlite+aiosqlite:///{db}"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert [r[0] for r in _rows(db)] == ["chat-hello-stream"]


def test_db_upgrade_command(tmp_path: Path) -> None:
    out = cli("db", "upgrade", "--db", f"sqlite:///{tmp_path}/up.db", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    with sqlite3.connect(tmp_path / "up.db") as conn:
        assert conn.execute("select version_num from alembic_version").fetchone() is not None
