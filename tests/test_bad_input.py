"""Bad input through the real CLI: one line on stderr naming the field or cause, exit code 2, never a traceback.

Most cases run `monitor.cli.main` in this process (the same entry point as the console script,
so the same error handling); a few run the real `llm-monitor` process, where the exit code and the
whole of stderr are what a user sees.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monitor.cli import main
from tests.mockserver import REPO_ROOT

TARGET = '{name: m, base_url: "http://127.0.0.1:9/v1"}'
PROBE = "{name: p, target: m, messages: [{role: user, content: hi}]}"
UNREACHABLE_DB = "postgresql://postgres@127.0.0.1:1/x"
# A port nobody listens on is refused at once; connect() still retries three times, a second apart.
DB_RETRY_LINE = "retry"

# (config file, expected error after "llm-monitor: error: "). Each names the YAML path or the cause.
CONFIGS = {
    "wrong-type-number": (
        f"targets: [{{name: m, base_url: 'http://x/v1', timeout_s: fast}}]\nprobes: [{PROBE}]",
        "targets[0].timeout_s: 'fast' is not a duration",
    ),
    "wrong-type-bool": (
        f"targets: [{TARGET}]\nprobes: [{{name: p, target: m, prompt: hi, endpoint: completion, stream: maybe}}]",
        "probes[0].stream: must be true or false",
    ),
    "wrong-type-list": (f"targets: {TARGET}\nprobes: [{PROBE}]", "targets: must be a list"),
    "wrong-type-mapping": ("storage: sqlite:///x.db", "storage: must be a mapping"),
    "out-of-range": (
        f"targets: [{TARGET}]\nprobes: [{{name: p, target: m, prompt: hi, endpoint: completion, max_tokens: 0}}]",
        "probes[0].max_tokens: must be >= 1",
    ),
    "unknown-top-level-key": (f"tragets: [{TARGET}]", "tragets: unknown field"),
    "unknown-target-key": (
        f"targets: [{{name: m, base_url: 'http://x/v1', timeout: 5}}]\nprobes: [{PROBE}]",
        "targets[0].timeout: unknown field",
    ),
    "unknown-probe-key": (
        f"targets: [{TARGET}]\nprobes: [{{name: p, target: m, prompt: hi, endpoint: completion, max_token: 5}}]",
        "probes[0].max_token: unknown field (not a probe option nor a known sampling parameter",
    ),
    "missing-targets": (f"probes: [{PROBE}]", "probes[0].target: unknown target 'm' (targets: none defined)"),
    "missing-base-url": ("targets: [{name: m}]", "targets[0].base_url: required field is missing"),
    "duplicate-target-names": (f"targets: [{TARGET}, {TARGET}]", "targets[1].name: duplicate name 'm'"),
    "duplicate-probe-names": (f"targets: [{TARGET}]\nprobes: [{PROBE}, {PROBE}]", "probes[1].name: duplicate name 'p'"),
    "bad-name": (
        f"targets: [{TARGET}]\nprobes: [{{name: 'my probe', target: m, prompt: hi, endpoint: completion}}]",
        "probes[0].name: must use letters, digits",
    ),
    "bad-url": ("targets: [{name: m, base_url: '127.0.0.1:8000'}]", "targets[0].base_url: must be an http://"),
    "bad-regex": (
        f"targets: [{TARGET}]\nprobes: [{{name: p, target: m, prompt: hi, endpoint: completion, "
        "expect: {regex: '(unclosed'}}]",
        "probes[0].expect.regex: not a valid regular expression",
    ),
    "unsupported-db": ("storage: {url: 'mysql://root@db/x'}", "storage.url: unsupported database URL"),
    "bad-maintenance-cron": (
        "maintenance: [{name: w, cron: '61 * * * *', duration: 1h}]",
        "maintenance[0].cron: invalid crontab '61 * * * *'",
    ),
    "unset-api-key-env": (
        "targets: [{name: m, base_url: 'http://x/v1', api_key_env: LLMMON_TEST_NOT_SET}]",
        "targets[0].api_key_env: environment variable LLMMON_TEST_NOT_SET is not set",
    ),
    "invalid-yaml": ("targets: [", "invalid YAML at line"),
    "not-a-mapping": ("- just\n- a list", "the top level must be a mapping"),
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    code = exc.value.code
    assert isinstance(code, int)
    return code, err.splitlines()


def _assert_one_error(code: int, lines: list[str], expected: str) -> None:
    assert code == 2, lines
    assert "Traceback" not in "\n".join(lines)
    assert len(lines) == 1, lines
    assert lines[0].startswith("llm-monitor: error: "), lines
    assert expected in lines[0], lines


@pytest.mark.parametrize("case", list(CONFIGS))
def test_bad_config_file_is_one_line_naming_the_field(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, expected = CONFIGS[case]
    code, lines = _run_main(["check-config", "-c", str(_write(tmp_path, text))], capsys)
    _assert_one_error(code, lines, expected)


BAD_CRON = (
    f"targets: [{TARGET}]\nprobes: [{{name: p, target: m, prompt: hi, endpoint: completion, cron: '61 * * * *'}}]"
)


def test_check_config_rejects_a_bad_probe_cron(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["check-config", "-c", str(_write(tmp_path, BAD_CRON))])
    _assert_one_error(int(str(exc.value.code)), capsys.readouterr().err.splitlines(), "probes[0].cron: invalid crontab")


SLOS = {
    "not-a-number": ("ttft_p95_ms < banana", "--slo: clause 1 'ttft_p95_ms < banana': 'banana' is not a number"),
    "unknown-metric": ("ttft_p95_ms<=500,foo<1", "--slo: clause 2 'foo<1': unknown metric 'foo'"),
    "bad-operator": ("ttft_p95_ms ~ 5", "--slo: clause 1 'ttft_p95_ms ~ 5': expected METRIC OP NUMBER"),
    "missing-value": ("error_rate <", "--slo: clause 1 'error_rate <': expected METRIC OP NUMBER"),
    "empty": ("", "--slo: empty expression"),
}


@pytest.mark.parametrize("case", list(SLOS))
def test_bad_slo_expression_is_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slo, expected = SLOS[case]
    argv = ["loadtest", "--base-url", "http://127.0.0.1:9/v1", "--db", f"sqlite:///{tmp_path}/x.db", "--slo", slo]
    code, lines = _run_main(argv, capsys)
    _assert_one_error(code, lines, expected)
    assert not (tmp_path / "x.db").exists()  # refused before anything was started or written


# --- the real process ---------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args], cwd=cwd, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip


def test_process_bad_cron_at_run_and_bad_field_at_check_config(tmp_path: Path) -> None:
    config = _write(tmp_path, BAD_CRON + f"\nstorage: {{url: 'sqlite:///{tmp_path}/d.db'}}\napi: {{port: 0}}")
    out = _cli("run", "-c", str(config), cwd=tmp_path)
    lines = out.stderr.splitlines()
    _assert_one_error(out.returncode, lines, "probes[0].cron: invalid crontab '61 * * * *'")
    assert not (tmp_path / "d.db").exists()

    text, expected = CONFIGS["unknown-probe-key"]
    out = _cli("check-config", "-c", str(_write(tmp_path, text)), cwd=tmp_path)
    _assert_one_error(out.returncode, out.stderr.splitlines(), expected)
    assert out.stdout == ""


@pytest.mark.parametrize("command", ["probe", "run"])
def test_unreachable_database_is_one_error_line(command: str, tmp_path: Path) -> None:
    config = _write(tmp_path, f"storage: {{url: '{UNREACHABLE_DB}'}}\ntargets: [{TARGET}]\nprobes: [{PROBE}]")
    out = _cli(command, "-c", str(config), cwd=tmp_path)
    lines = out.stderr.splitlines()
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    errors = [line for line in lines if line.startswith("llm-monitor: error: ")]
    assert (
        errors
        == [lines[-1]]
        == ["llm-monitor: error: cannot reach database postgresql+asyncpg://postgres@127.0.0.1:1/x: connection refused"]
    )
    # The rest are the logged connection retries (timestamped log records, not errors).
    assert all(" monitor.store.db: " in line and DB_RETRY_LINE in line for line in lines[:-1]), lines
