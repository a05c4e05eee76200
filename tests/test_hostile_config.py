"""Hostile config files through the real CLI process: whatever `check-config` accepts, `run` runs.

Every refused file gets one stderr line naming the YAML path or the cause, exit code 2, never a
traceback, from `check-config`, `run` and `probe` alike; a SIGHUP reload of such a file is
rejected with one log line and the running config stays. The same files were accepted by
`check-config` and crashed `run`/`probe` (exit 70), or took gigabytes, before the strict loader
and the bounded settings.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitor.config import MAX_CONFIG_DEPTH, MAX_DURATION_S
from tests.conftest import chat_probe
from tests.mockserver import REPO_ROOT, MockProcess
from tests.test_daemon import DaemonProcess, _get_json, _wait_rows, daemon_config

TARGET = 'targets: [{name: m, base_url: "http://127.0.0.1:9/v1"}]'
PROBE = "name: p, target: m, messages: [{role: user, content: hi}]"
# The billion-laughs shape: 552 bytes that expand to 10^9 strings when aliases are followed.
BOMB = "\n".join(
    [
        TARGET,
        "probes:",
        "- name: p",
        "  target: m",
        "  messages: [{role: user, content: hi}]",
        "  extra_body:",
        '    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"    {name}: &{name} [{','.join([f'*{prev}'] * 9)}]"
            for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


def _probe(extra: str) -> str:
    return f"{TARGET}\nprobes: [{{{PROBE}, {extra}}}]"


# (config text, what the one error line must contain)
HOSTILE = {
    "interval-1e300": (_probe("interval_s: 1e300"), "probes[0].interval_s: must be <= 31622400"),
    "interval-inf": (_probe("interval_s: .inf"), "probes[0].interval_s: must be a finite number"),
    "jitter-1e300": (_probe("jitter_s: 1.0e300"), "probes[0].jitter_s: must be <="),
    "jitter-inf": (_probe("jitter_s: .inf"), "probes[0].jitter_s: must be a finite number"),
    "retention-interval-1e300": (
        _probe("interval_s: 60") + "\nretention: {interval_s: 1e300}",
        "retention.interval_s: must be <=",
    ),
    "absence-eval-inf": (
        _probe("interval_s: 60") + "\ndaemon: {absence_eval_interval_s: .inf}",
        "daemon.absence_eval_interval_s: must be a finite number",
    ),
    "date-in-extra-body": (_probe("extra_body: {when: 2024-01-01}"), "probes[0].extra_body.when: a date or time"),
    "binary-stop": (_probe("stop: !!binary aGVsbG8="), "probes[0].stop: !!binary values are not allowed"),
    "set-in-extra-body": (_probe("extra_body: {s: !!set {a, b}}"), "probes[0].extra_body.s: !!set values"),
    "header-crlf": (
        'targets: [{name: m, base_url: "http://127.0.0.1:9/v1", headers: {X-A: "a\\r\\nX-Injected: 1"}}]\n'
        f"probes: [{{{PROBE}}}]",
        "targets[0].headers: header X-A: the value must not contain CR, LF or NUL",
    ),
    "nested-10000-deep": (
        _probe("extra_body: {x: " + "[" * 10_000 + "]" * 10_000 + "}"),
        f"nested deeper than {MAX_CONFIG_DEPTH} levels",
    ),
    "anchor-bomb": (BOMB, "aliases (*a) are not allowed"),
    "duplicate-key": (
        f"{TARGET}\nprobes: [{{{PROBE}, max_tokens: 5, max_tokens: 6}}]",
        "probes[0].max_tokens: duplicate key",
    ),
    "empty-file": ("", "the config file is empty"),
    "comments-only": ("# nothing here\n", "the config file is empty"),
    "no-probes": (TARGET, "probes: none configured"),
    "interval-and-cron": (
        _probe("interval_s: 30, cron: '*/5 * * * *'"),
        "probes[0]: give interval_s or cron, not both",
    ),
    "max-tokens-string": (_probe("max_tokens: '512'"), "probes[0].max_tokens: must be a whole number"),
    "max-tokens-float": (_probe("max_tokens: 5.5"), "probes[0].max_tokens: must be a whole number"),
    "rule-window-1e300": (
        _probe("interval_s: 60")
        + "\nrules: [{name: r, kind: threshold, metric: latency_ms, op: '>', value: 1, window_s: 1e300}]",
        "rules[0].window_s: must be <=",
    ),
    "rule-count-string": (
        _probe("interval_s: 60") + "\nrules: [{name: r, kind: consecutive_failures, count: '3'}]",
        "rules[0].count: must be a whole number (without quotes)",
    ),
}
# The ones that used to pass check-config and then crash `run` (exit 70) or blow up memory.
CRASHED_RUN = ["interval-1e300", "jitter-inf", "retention-interval-1e300", "absence-eval-inf", "anchor-bomb"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args], cwd=cwd, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip


def _write(tmp_path: Path, text: str, name: str = "monitor.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _assert_one_error(out: subprocess.CompletedProcess[str], expected: str) -> None:
    lines = out.stderr.splitlines()
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith("llm-monitor: error: "), lines
    assert expected in lines[0], lines
    assert out.stdout == ""


@pytest.mark.parametrize("case", list(HOSTILE))
def test_check_config_refuses_hostile_input_in_one_line(case: str, tmp_path: Path) -> None:
    text, expected = HOSTILE[case]
    _assert_one_error(_cli("check-config", "-c", str(_write(tmp_path, text)), cwd=tmp_path), expected)


@pytest.mark.parametrize("case", CRASHED_RUN)
def test_run_refuses_the_same_input_before_touching_the_database(case: str, tmp_path: Path) -> None:
    text, expected = HOSTILE[case]
    config = _write(tmp_path, f"{text}\nstorage: {{url: 'sqlite+aiosqlite:///{tmp_path}/d.db'}}\napi: {{port: 0}}")
    _assert_one_error(_cli("run", "-c", str(config), cwd=tmp_path), expected)
    assert not (tmp_path / "d.db").exists()


def test_probe_refuses_a_date_in_extra_body(mock: MockProcess, tmp_path: Path) -> None:
    config = _write(
        tmp_path,
        f"targets: [{{name: m, base_url: '{mock.base_url}'}}]\n"
        f"storage: {{url: 'sqlite+aiosqlite:///{tmp_path}/d.db'}}\n"
        f"probes: [{{{PROBE}, max_tokens: 4, extra_body: {{when: 2024-01-01T10:00:00}}}}]",
    )
    _assert_one_error(_cli("probe", "-c", str(config), cwd=tmp_path), "probes[0].extra_body.when: a date or time")


def test_what_check_config_accepts_at_the_limits_runs(mock: MockProcess, tmp_path: Path) -> None:
    """Every bounded duration at its maximum, JSON-style floats and nested extra_body: `run` starts and stops."""
    db = tmp_path / "d.db"
    raw = daemon_config(
        mock.base_url, f"sqlite+aiosqlite:///{db}",
        chat_probe(interval_s=1, max_tokens=512, extra_body={"nested": {"list": [1, 2.5, "x", None, True]}}),
        chat_probe(name="slow", interval_s=MAX_DURATION_S, jitter_s=MAX_DURATION_S, max_tokens=8),
        retention={"interval_s": MAX_DURATION_S, "rollup_interval_s": MAX_DURATION_S, "raw_days": 36500},
        daemon={"absence_eval_interval_s": MAX_DURATION_S, "misfire_grace_s": MAX_DURATION_S, "shutdown_grace_s": 5},
    )  # fmt: skip
    # 1e3 without a dot is a float in YAML 1.2 and JSON (YAML 1.1 would read a string).
    text = yaml.safe_dump(raw).replace("max_tokens: 512", "max_tokens: 512\n  temperature: 1e-1", 1)
    config = _write(tmp_path, text)
    out = _cli("check-config", "-c", str(config), cwd=tmp_path)
    assert out.returncode == 0 and ": ok (1 targets, 2 probes" in out.stdout, out.stderr
    out = _cli("probe", "-c", str(config), "--probe", "chat", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]

    daemon = DaemonProcess(config, tmp_path)
    try:
        line = daemon.wait_for_line("llm-monitor daemon running")
        assert _get_json(line.rsplit("API ", 1)[1].strip() + "/readyz")[0] == 200
        _wait_rows(db, "chat", 0)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.output
    finally:
        daemon.kill()
    assert "Traceback" not in daemon.output


def test_sighup_reload_of_hostile_configs_keeps_the_running_one(mock: MockProcess, tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    config = tmp_path / "monitor.yaml"
    raw = daemon_config(mock.base_url, f"sqlite+aiosqlite:///{db}", chat_probe(interval_s=1, max_tokens=8))
    good = yaml.safe_dump(raw)
    config.write_text(good, encoding="utf-8")
    daemon = DaemonProcess(config, tmp_path)
    try:
        daemon.wait_for_line("llm-monitor daemon running")
        seen = _wait_rows(db, "chat", 0)
        probe = raw["probes"][0]
        hostile = {
            "probes[0].interval_s: must be <=": yaml.safe_dump({**raw, "probes": [{**probe, "interval_s": 1e300}]}),
            "probes[0].jitter_s: must be a finite number": yaml.safe_dump(
                {**raw, "probes": [{**probe, "jitter_s": float("inf")}]}
            ),
            "probes: none configured": yaml.safe_dump({**raw, "probes": []}),
            "aliases (*a) are not allowed": good + "x: &a [1]\ny: *a\n",
            f"nested deeper than {MAX_CONFIG_DEPTH}": good + "z: " + "[" * 10_000 + "]" * 10_000 + "\n",
        }
        for expected, text in hostile.items():
            config.write_text(text, encoding="utf-8")
            daemon.signal(signal.SIGHUP)
            rejected = daemon.wait_for_line("reload rejected")
            assert expected in rejected, rejected
            seen = _wait_rows(db, "chat", seen)  # the running config keeps probing
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.output
    finally:
        daemon.kill()
    assert "Traceback" not in daemon.output
    assert "never retrieved" not in daemon.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [("targets: [1]", "targets[1]: must be a mapping"), ("targets: 5", "targets: must be a list"),
     ("storage: 5", "storage: must be a mapping")],
)  # fmt: skip
def test_probe_flags_over_a_malformed_file_name_the_field(text: str, expected: str, tmp_path: Path) -> None:
    """--base-url and --db are merged into the file's sections; a malformed section used to crash the merge."""
    config = _write(tmp_path, text)
    args = ["probe", "-c", str(config), "--base-url", "http://127.0.0.1:9/v1", "--db", f"sqlite:///{tmp_path}/d.db"]
    _assert_one_error(_cli(*args, cwd=tmp_path), expected)
