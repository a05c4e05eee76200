"""The daemon end to end: real mock process, real SQLite/PostgreSQL, real sockets, real signals."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import Settings, parse_settings
from monitor.daemon import Daemon
from monitor.store.db import connect
from monitor.store.repo import Store
from tests.conftest import chat_probe, completion_probe
from tests.mockserver import REPO_ROOT, MockProcess
from tests.receivers import ReceivedRequest, WebhookReceiver

STARTUP_TIMEOUT_S = 20.0


def daemon_config(base_url: str, db_url: str, *probes: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """A config dict: one target `mock`, the given probes (default: chat + completion every second)."""
    chosen = list(probes) or [chat_probe(interval_s=1, max_tokens=512), completion_probe(interval_s=1, max_tokens=8)]
    return {
        "storage": {"url": db_url},
        "targets": [{"name": "mock", "base_url": base_url, "model": "glm-4-9b-chat", "timeout_s": 10}],
        "probes": chosen,
        "api": {"port": 0},
        "daemon": {"shutdown_grace_s": 5},
        **sections,
    }


@asynccontextmanager
async def run_daemon_in_task(settings: Settings, **kwargs: Any) -> AsyncIterator[Daemon]:
    """Serve `settings` in a task of this loop; stop it (gracefully) when the block ends."""
    daemon = Daemon(settings, **kwargs)
    task = asyncio.create_task(daemon.serve())
    started = asyncio.create_task(daemon.started.wait())
    await asyncio.wait({task, started}, timeout=STARTUP_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        started.cancel()
        if task.done():
            task.result()  # raises the startup error
        task.cancel()
        raise AssertionError("daemon did not start")
    try:
        yield daemon
    finally:
        daemon.request_stop("test finished")
        assert await asyncio.wait_for(task, 30) == 0


async def wait_for(predicate: Callable[[], Any], timeout_s: float = 15.0, what: str = "condition") -> Any:
    """Poll an async or plain predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def count_results(db_url: str, probe: str | None = None) -> int:
    engine = await connect(db_url)
    try:
        return await Store.from_engine(engine).count_results(probe=probe)
    finally:
        await engine.dispose()


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_daemon_probes_on_schedule_serves_api_and_stops_cleanly(
    mock: MockProcess, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="monitor")
    settings = parse_settings(daemon_config(mock.base_url, db_url))
    async with run_daemon_in_task(settings) as daemon, aiohttp.ClientSession() as http:
        assert daemon.api_url is not None and daemon.api_url.startswith("http://127.0.0.1:")
        await wait_for(lambda: count_results(db_url, "chat"), what="a chat result")
        await wait_for(lambda: count_results(db_url, "completion"), what="a completion result")
        await wait_for(lambda: _count_at_least(db_url, 4), what="four results")

        async with http.get(daemon.api_url + "/healthz") as resp:
            assert resp.status == 200 and (await resp.json()) == {"status": "ok"}
        async with http.get(daemon.api_url + "/readyz") as resp:
            body = await resp.json()
            assert resp.status == 200, body
            assert body["ready"] is True and body["checks"] == {"database": "ok", "scheduler": "running"}
            assert body["role"] == "leader" and body["leader"] == body["replica"]
        async with http.get(daemon.api_url + "/metrics") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            families = _families(await resp.text())
        results = families["llm_monitor_probe_results"].samples
        assert {s.labels["probe"] for s in results} == {"chat", "completion"}
        assert {(s.labels["probe"], s.labels["outcome"]) for s in results} == {("chat", "ok"), ("completion", "ok")}
        # The completion probe's max_tokens cuts its reply (asked for, so no check fails).
        assert families["llm_monitor_truncations"].samples[0].labels["probe"] == "completion"
        latency = [s for s in families["llm_monitor_probe_latency_seconds"].samples if s.name.endswith("_count")]
        assert {s.labels["endpoint"] for s in latency} == {"chat", "completion"}
        lateness = families["llm_monitor_scheduler_lateness_seconds"].samples
        assert [s.value for s in lateness if s.name.endswith("_count")][0] >= 2
        assert families["llm_monitor_completion_tokens"].samples[0].value > 0

        async with http.get(daemon.api_url + "/api/v1/results", params={"probe": "chat", "limit": "2"}) as resp:
            rows = await resp.json()
        assert resp.status == 200 and len(rows) == 2
        assert rows[0]["started_at"] >= rows[1]["started_at"] and {r["probe"] for r in rows} == {"chat"}
        assert not any("key" in name.lower() for name in rows[0])

    summary = daemon.summary
    assert summary is not None and summary.runs >= 4 and summary.stored == summary.runs - summary.cancelled
    assert any("daemon stopped after" in r.getMessage() for r in caplog.records)
    # Every result was written before the engine closed.
    assert await count_results(db_url) == summary.stored


async def _count_at_least(db_url: str, n: int) -> bool:
    return await count_results(db_url) >= n


async def test_startup_failure_raises_a_one_line_error(mock: MockProcess, tmp_path: Path) -> None:
    taken = daemon_config(mock.base_url, f"sqlite+aiosqlite:///{tmp_path}/a.db")
    async with run_daemon_in_task(parse_settings(taken)) as first:
        port = int(str(first.api_url).rsplit(":", 1)[1])
        clash = daemon_config(mock.base_url, f"sqlite+aiosqlite:///{tmp_path}/b.db", api={"port": port})
        from monitor.errors import ConfigError

        with pytest.raises(ConfigError, match=rf"api.port: cannot listen on 127.0.0.1:{port}"):
            await Daemon(parse_settings(clash)).serve()


async def test_reload_applies_a_good_config_and_rejects_a_bad_one(
    mock: MockProcess, sqlite_db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "monitor.yaml"
    raw = daemon_config(mock.base_url, sqlite_db_url, chat_probe(interval_s=1, max_tokens=16))
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    settings = parse_settings(raw)
    async with run_daemon_in_task(settings, config_path=config) as daemon:
        config.write_text(yaml.safe_dump({**raw, "probes": [chat_probe(interval_s=1, max_tokens=0)]}))
        assert not await daemon.reload()
        assert "probes[0].max_tokens: must be >= 1" in caplog.text
        config.write_text(yaml.safe_dump({**raw, "probes": [chat_probe(name="x", interval_s=1, cron="61 * * * *")]}))
        assert not await daemon.reload()
        assert "probes[0].cron: invalid crontab" in caplog.text
        assert daemon.settings is settings

        raw["probes"] = [chat_probe(interval_s=1, max_tokens=16), completion_probe(name="added", interval_s=1)]
        config.write_text(yaml.safe_dump(raw), encoding="utf-8")
        assert await daemon.reload()
        assert [p.name for p in daemon.settings.probes] == ["chat", "added"]
        await wait_for(lambda: count_results(sqlite_db_url, "added"), what="a result of the added probe")


# --- the real process -----------------------------------------------------------------------------


class DaemonProcess:
    """`python -m monitor run -c FILE` as a child process; stderr is collected line by line."""

    def __init__(self, config: Path, cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
        env["PYTHONPATH"] = str(REPO_ROOT)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "-c", str(config)], cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._cursor = 0
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def wait_for_line(self, needle: str, timeout_s: float = STARTUP_TIMEOUT_S) -> str:
        """The next line (after the previous match) containing `needle`."""
        deadline = time.monotonic() + timeout_s
        while True:
            for i in range(self._cursor, len(self.lines)):
                if needle in self.lines[i]:
                    self._cursor = i + 1
                    return self.lines[i]
            if self.process.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"daemon exited before {needle!r}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} in daemon output:\n{self.output}")
            time.sleep(0.05)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout_s: float = 30.0) -> int:
        code = self.process.wait(timeout=timeout_s)
        self._reader.join(timeout=5)
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.wait()


def _sqlite_count(path: Path, probe: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("select count(*) from probe_results where probe = ?", (probe,)).fetchone()[0])


def _get_json(url: str) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
        exc.close()
        return exc.code, body


def _wait_rows(path: Path, probe: str, more_than: int, timeout_s: float = 15.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            count = _sqlite_count(path, probe)
        except sqlite3.OperationalError:  # the schema is not there yet
            count = 0
        if count > more_than:
            return count
        time.sleep(0.1)
    raise AssertionError(f"no new {probe} rows (still {more_than})")


def test_process_reloads_on_sighup_and_exits_0_on_sigterm(mock: MockProcess, tmp_path: Path) -> None:
    db = tmp_path / "daemon.db"
    config = tmp_path / "monitor.yaml"
    raw = daemon_config(mock.base_url, f"sqlite+aiosqlite:///{db}", chat_probe(interval_s=1, max_tokens=16))
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    daemon = DaemonProcess(config, tmp_path)
    try:
        line = daemon.wait_for_line("llm-monitor daemon running")
        api = line.rsplit("API ", 1)[1].strip()
        assert _get_json(api + "/readyz")[0] == 200
        seen = _wait_rows(db, "chat", 0)

        # A broken config: rejected with one log line, and the old config keeps probing.
        config.write_text("probes: [{name: chat, target: nowhere}]\n", encoding="utf-8")
        daemon.signal(signal.SIGHUP)
        rejected = daemon.wait_for_line("reload rejected")
        assert "probes[0]" in rejected and "Traceback" not in daemon.output
        seen = _wait_rows(db, "chat", seen)
        assert _get_json(api + "/healthz") == (200, {"status": "ok"})

        raw["probes"].append(completion_probe(name="after-reload", interval_s=1, max_tokens=4))
        config.write_text(yaml.safe_dump(raw), encoding="utf-8")
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_line("reloaded")
        _wait_rows(db, "after-reload", 0)

        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.output
    finally:
        daemon.kill()
    summary = [line for line in daemon.lines if "daemon stopped after" in line]
    assert len(summary) == 1, daemon.output
    assert "Traceback" not in daemon.output


def test_second_signal_forces_exit_while_a_probe_hangs(tmp_path: Path) -> None:
    with MockProcess(stall_after=1) as stalled:
        config = tmp_path / "monitor.yaml"
        raw = daemon_config(
            stalled.base_url, f"sqlite+aiosqlite:///{tmp_path}/d.db", chat_probe(interval_s=1),
            daemon={"shutdown_grace_s": 120},
        )  # fmt: skip
        raw["targets"][0]["timeout_s"] = 120
        raw["targets"][0]["chunk_timeout_s"] = 120
        config.write_text(yaml.safe_dump(raw), encoding="utf-8")
        daemon = DaemonProcess(config, tmp_path)
        try:
            line = daemon.wait_for_line("llm-monitor daemon running")
            api = line.rsplit("API ", 1)[1].strip()
            # Wait until the hung probe is in flight.
            deadline = time.monotonic() + 10
            while _in_flight(api) < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            daemon.signal(signal.SIGTERM)
            daemon.wait_for_line("stopping (SIGTERM)")
            daemon.signal(signal.SIGINT)
            # The grace is 120 s; the second signal ends the wait at once.
            assert daemon.wait(timeout_s=20) == 0, daemon.output
        finally:
            daemon.kill()
    assert "second stop request" in daemon.output and "cancelled 1 in-flight jobs (forced stop" in daemon.output
    assert "after the 120 s grace" not in daemon.output  # the grace was skipped, not used up
    assert "daemon stopped after" in daemon.output
    # The cancelled probe is counted, not logged by APScheduler as a job that raised.
    assert "raised an exception" not in daemon.output and "Traceback" not in daemon.output, daemon.output


def _in_flight(api: str) -> float:
    import urllib.request

    with urllib.request.urlopen(api + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "llm_monitor_probes_in_flight":
            return float(family.samples[0].value)
    return 0.0


def test_run_refuses_a_public_bind_without_a_token(tmp_path: Path) -> None:
    config = tmp_path / "monitor.yaml"
    raw = daemon_config("http://127.0.0.1:9/v1", f"sqlite+aiosqlite:///{tmp_path}/x.db", api={"host": "0.0.0.0"})
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    out = subprocess.run(
        [sys.executable, "-m", "monitor", "run", "-c", str(config)], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "llm-monitor: error: api.host: binding to 0.0.0.0 needs api.token_env (writes would be unauthenticated)"
    )
    assert not (tmp_path / "x.db").exists()


# --- alerts end to end ------------------------------------------------------------------------------

FORMATS = ("generic", "alertmanager", "slack", "feishu", "dingtalk", "wecom")
FAILING = {
    "name": "chat-failing", "kind": "consecutive_failures", "count": 2, "scope": {"probe": "chat"},
    "severity": "critical", "annotations": {"summary": "chat probe failing: {value}"},
}  # fmt: skip


def _alert_config(mock: MockProcess, db_url: str, hook: WebhookReceiver, formats: tuple[str, ...]) -> dict[str, Any]:
    receivers = [{"name": f"to-{fmt}", "format": fmt, "url": f"http://127.0.0.1:{hook.port}/{fmt}"} for fmt in formats]
    return daemon_config(
        mock.base_url, db_url, chat_probe(interval_s=1, max_tokens=64), rules=[FAILING], receivers=receivers,
        daemon={"shutdown_grace_s": 5, "absence_eval_interval_s": 1},
    )  # fmt: skip


def _title_of(fmt: str, body: dict[str, Any]) -> str:
    """The human headline of a payload, wherever its format puts it."""
    if fmt == "slack":
        return str(body["text"])
    if fmt == "feishu":
        return str(body["card"]["header"]["title"]["content"])
    if fmt == "dingtalk":
        return str(body["markdown"]["title"])
    if fmt == "wecom":
        return str(body["markdown"]["content"])
    raise AssertionError(fmt)


def _check_payload(fmt: str, body: dict[str, Any], status: str) -> None:
    if fmt == "generic":
        assert body["version"] == "1" and body["status"] == status and body["receiver"] == "to-generic"
        alert = body["alert"]
        assert (alert["name"], alert["probe"], alert["target"], alert["severity"]) == (
            "chat-failing", "chat", "mock", "critical",
        )  # fmt: skip
        assert alert["annotations"]["summary"].startswith("chat probe failing")
        assert (alert["ended_at"] is None) == (status == "firing")
    elif fmt == "alertmanager":
        assert body["version"] == "4" and body["status"] == status and body["receiver"] == "to-alertmanager"
        for key in ("groupKey", "groupLabels", "commonLabels", "commonAnnotations", "externalURL"):
            assert key in body
        (alert,) = body["alerts"]
        assert alert["status"] == status and alert["labels"]["alertname"] == "chat-failing"
        assert set(alert) >= {"annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
        assert (alert["endsAt"] == "0001-01-01T00:00:00Z") == (status == "firing")
    else:
        # Markdown formats escape brackets; the words are what a person reads.
        assert f"[{status.upper()}] chat-failing on chat" in _title_of(fmt, body).replace("\\", "")


async def _by_status(hook: WebhookReceiver, status: str, count: int) -> list[ReceivedRequest]:
    def matching() -> list[ReceivedRequest]:
        return [r for r in hook.delivered() if status.upper() in r.body.decode() or f'"{status}"' in r.body.decode()]

    return list(await wait_for(lambda: len(matching()) >= count and matching(), what=f"{count} {status} messages"))


async def test_an_alert_fires_and_resolves_through_every_format(mock: MockProcess, sqlite_db_url: str) -> None:
    async with WebhookReceiver() as hook:
        settings = parse_settings(_alert_config(mock, sqlite_db_url, hook, FORMATS))
        async with run_daemon_in_task(settings) as daemon, aiohttp.ClientSession() as http:
            assert daemon.api_url is not None
            await wait_for(lambda: count_results(sqlite_db_url, "chat"), what="a healthy result")
            assert hook.received == []

            mock.configure(status=503)
            firing = await _by_status(hook, "firing", len(FORMATS))
            async with http.get(daemon.api_url + "/api/v1/alerts") as resp:
                alerts = await resp.json()
            assert [(a["rule"], a["state"]) for a in alerts] == [("chat-failing", "firing")]
            async with http.get(daemon.api_url + "/metrics") as resp:
                families = _families(await resp.text())
            states = {s.labels["state"]: s.value for s in families["llm_monitor_alerts"].samples}
            assert states["firing"] == 1
            assert "llm_monitor_outbox_pending" in families

            mock.reset()
            resolved = await _by_status(hook, "resolved", len(FORMATS))
    for request in firing + resolved:
        fmt = request.path.strip("/")
        body = request.json
        status = "resolved" if request in resolved else "firing"
        _check_payload(fmt, body, status)
        assert request.headers["Idempotency-Key"]
    assert sorted(r.path for r in firing) == sorted(f"/{fmt}" for fmt in FORMATS)
    # One firing and one resolved message per receiver: nothing repeated.
    assert len(hook.delivered()) == 2 * len(FORMATS)


async def test_restart_neither_renotifies_nor_loses_messages(mock: MockProcess, sqlite_db_url: str) -> None:
    async with WebhookReceiver() as hook:
        settings = parse_settings(_alert_config(mock, sqlite_db_url, hook, ("generic",)))
        mock.configure(status=503)
        async with run_daemon_in_task(settings):
            await _by_status(hook, "firing", 1)

        # Restarted while the target still fails: the alert is known to fire, so no new message.
        before = await count_results(sqlite_db_url, "chat")
        async with run_daemon_in_task(settings):
            await wait_for(lambda: _count_at_least_probe(sqlite_db_url, "chat", before + 3), what="three more results")
        assert len(hook.delivered()) == 1

        # The receiver is down when the alert resolves: the message waits in the outbox.
        await hook.stop()
        mock.reset()
        async with run_daemon_in_task(settings) as daemon:
            pending = await wait_for(lambda: _outbox_pending(daemon), what="a pending resolved message")
            assert pending == 1
        # Connection refused: nothing arrived, the message is still waiting.
        assert len(hook.received) == 1

        # Back up, and a fresh daemon delivers it.
        await hook.start()
        async with run_daemon_in_task(settings) as daemon:
            (firing, resolved) = await hook.wait_for(2, timeout_s=20)
            assert await wait_for(lambda: _outbox_pending(daemon, want_zero=True), what="an empty outbox")
    assert firing.json["status"] == "firing" and resolved.json["status"] == "resolved"
    assert firing.json["alert"]["fingerprint"] == resolved.json["alert"]["fingerprint"]
    assert len(hook.delivered()) == 2


async def _count_at_least_probe(db_url: str, probe: str, n: int) -> bool:
    return await count_results(db_url, probe) >= n


async def _outbox_pending(daemon: Daemon, want_zero: bool = False) -> int | bool:
    assert daemon.api_url is not None
    async with aiohttp.ClientSession() as http, http.get(daemon.api_url + "/metrics") as resp:
        families = _families(await resp.text())
    value = int(families["llm_monitor_outbox_pending"].samples[0].value)
    return value == 0 if want_zero else value
