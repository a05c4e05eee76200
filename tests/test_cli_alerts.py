"""`alerts`, `silence` and `notify test` as a user runs them: real subprocesses, a real SQLite file, real receivers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.ext.asyncio import async_sessionmaker

from monitor.alerts.clock import ManualClock
from monitor.alerts.engine import AlertEngine
from monitor.alerts.outbox import Outbox
from monitor.alerts.source import RawWindowSource
from monitor.config import load_settings
from monitor.results import ProbeResult
from monitor.store import Store, create_engine, upgrade
from tests.receivers import WebhookReceiver

CONFIG: dict[str, Any] = {
    "targets": [{"name": "glm4", "base_url": "http://127.0.0.1:8000/v1"}],
    "probes": [{"name": "chat", "target": "glm4", "messages": [{"role": "user", "content": "你好"}]}],
    "rules": [{"name": "failing", "kind": "consecutive_failures", "count": 1, "severity": "critical"}],
}


class Result:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr


async def cli(*args: str, cwd: Path) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env["COLUMNS"] = "200"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Result(proc.returncode, stdout.decode(), stderr.decode())


def write_config(tmp_path: Path, **extra: Any) -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "storage": {"url": f"sqlite:///{tmp_path / 'm.db'}"}, **extra}))
    return path


async def fire_alert(config: Path) -> None:
    """What a daemon would do: store a failing result and evaluate it (in this process, on the same file)."""
    settings = load_settings(config)
    engine = create_engine(settings.storage.url)
    try:
        await upgrade(engine)
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        clock = ManualClock(datetime.now(UTC))
        alerts = AlertEngine(
            settings, sessionmaker, source=RawWindowSource(sessionmaker), clock=clock, outbox=Outbox(sessionmaker)
        )
        result = ProbeResult(
            probe="chat", target="glm4", endpoint="chat", stream=True, max_tokens=None,
            started_at=clock.now() - timedelta(seconds=1), error_kind="connect_error", error_detail="refused",
        )  # fmt: skip
        await Store(sessionmaker).add_results([result])
        await alerts.on_result(result)
    finally:
        await engine.dispose()


async def test_alerts_and_silences_round_trip(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    empty = await cli("alerts", "-c", str(config), cwd=tmp_path)
    assert (empty.code, empty.stdout.strip()) == (0, "no alerts")
    await fire_alert(config)

    table = await cli("alerts", "-c", str(config), cwd=tmp_path)
    assert table.code == 0
    row = next(line for line in table.stdout.splitlines() if "failing" in line)
    assert row.replace("│", " ").split()[:5] == ["firing", "failing", "chat", "glm4", "critical"]

    added = await cli(
        "silence", "add", "--rule", "failing", "--label", "probe=chat", "--for", "2h", "--comment", "vLLM upgrade",
        "--author", "alice", "-c", str(config), cwd=tmp_path,
    )  # fmt: skip
    assert added.code == 0 and added.stdout.strip() == "1", added.stderr

    (alert,) = json.loads((await cli("alerts", "--json", "-c", str(config), cwd=tmp_path)).stdout)
    assert {k: alert[k] for k in ("rule", "probe", "state", "severity", "silenced", "muted_by")} == {
        "rule": "failing", "probe": "chat", "state": "firing", "severity": "critical", "silenced": True,
        "muted_by": "silence 1",
    }  # fmt: skip
    assert alert["annotations"]["summary"].startswith("failing on chat: 1 failures in a row: connect_error")

    (silence,) = json.loads((await cli("silence", "list", "--json", "-c", str(config), cwd=tmp_path)).stdout)
    assert silence["matchers"] == {"alertname": "failing", "probe": "chat"} and silence["created_by"] == "alice"
    ends = datetime.fromisoformat(silence["ends_at"].replace("Z", "+00:00"))
    starts = datetime.fromisoformat(silence["starts_at"].replace("Z", "+00:00"))
    assert ends - starts == timedelta(hours=2) and silence["active"] is True

    expired = await cli("silence", "expire", "1", "-c", str(config), cwd=tmp_path)
    assert (expired.code, expired.stdout.strip()) == (0, "silence 1 expired")
    again = await cli("silence", "expire", "1", "-c", str(config), cwd=tmp_path)
    assert (again.code, again.stderr.strip()) == (1, "no active silence with id 1")
    assert (await cli("silence", "list", "-c", str(config), cwd=tmp_path)).stdout.strip() == "no silences"
    listed = await cli("silence", "list", "--all", "-c", str(config), cwd=tmp_path)
    assert "expired" in listed.stdout and "vLLM upgrade" in listed.stdout


async def test_silence_add_rejects_bad_input_with_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    cases = [
        (["--rule", "failing", "--for", "2 fortnights"], "llm-monitor: error: --for: '2 fortnights': not a duration"),
        (["--rule", "nope", "--for", "1h"], "llm-monitor: error: --rule: unknown rule 'nope' (known: failing)"),
        (["--for", "1h"], "llm-monitor: error: silence add: give --rule NAME and/or --label NAME=VALUE"),
        (["--rule", "failing", "--label", "probe", "--for", "1h"], "llm-monitor: error: Invalid value for '--label'"),
        (["--rule", "failing", "--for", "0s"], "llm-monitor: error: a silence needs a duration > 0"),
    ]
    for args, message in cases:
        out = await cli("silence", "add", *args, "--comment", "x", "-c", str(config), cwd=tmp_path)
        assert out.code == 2 and out.stderr.startswith(message), (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


async def test_notify_test_sends_in_the_receivers_format(tmp_path: Path) -> None:
    async with WebhookReceiver() as hook:
        config = write_config(
            tmp_path,
            receivers=[{"name": "ops", "url": hook.url, "format": "slack"}, {"name": "am", "url": hook.url,
                       "format": "alertmanager"}],
        )  # fmt: skip
        ok = await cli("notify", "test", "ops", "-c", str(config), cwd=tmp_path)
        assert ok.code == 0 and ok.stdout.startswith("ops: HTTP 200 (slack, "), ok.stderr
        (request,) = hook.received
        assert request.json["text"].startswith(":red_circle: [FIRING] llm-monitor-test")
        assert request.headers["Idempotency-Key"].startswith("test-")

        am = await cli("notify", "test", "am", "-c", str(config), cwd=tmp_path)
        assert am.code == 0 and hook.received[-1].json["version"] == "4"

        hook.fail_with = 500
        failed = await cli("notify", "test", "ops", "-c", str(config), cwd=tmp_path)
        assert (failed.code, failed.stderr.strip()) == (1, "ops: HTTP 500: HTTP 500: receiver failing on purpose")
        await hook.stop()
        down = await cli("notify", "test", "ops", "-c", str(config), cwd=tmp_path)
        assert down.code == 1 and down.stderr.startswith("ops: no response: ClientConnectorError")
        assert hook.url not in down.stderr

        unknown = await cli("notify", "test", "pager", "-c", str(config), cwd=tmp_path)
        assert unknown.code == 2
        assert unknown.stderr.strip() == "llm-monitor: error: unknown receiver 'pager' (receivers: am, ops)"
