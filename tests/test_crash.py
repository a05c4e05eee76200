"""kill -9 of the daemon mid-run, and of a load-test runner mid-run: nothing corrupted, nothing lost, nothing repeated.

The daemon runs as a real `python -m monitor run` process, writing results every few hundred
milliseconds and holding a firing alert, when it gets SIGKILL (no handler, no cleanup). The test
then checks the database as it was left, restarts the daemon on it and watches a real receiver.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.loadtest.repo import LoadStore
from monitor.store.db import connect, create_engine, ensure_schema
from monitor.store.models_alerts import AlertStateRow
from monitor.store.models_loadtest import LoadRunRow
from monitor.store.repo import Store
from tests.conftest import chat_probe, completion_probe
from tests.mockserver import REPO_ROOT, MockProcess
from tests.receivers import ReceivedRequest, WebhookReceiver
from tests.test_daemon import daemon_config, wait_for

START_TIMEOUT_S = 20.0
RULE = {
    "name": "chat-failing", "kind": "consecutive_failures", "count": 2, "scope": {"probe": "chat"},
    "severity": "critical",
}  # fmt: skip


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


class Child:
    """A child process whose stderr lines are collected by a task of the test's own loop."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, *args: str, cwd: Path) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor", *args, cwd=cwd, env=_env(), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.lines.append(line.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def line(self, needle: str, timeout_s: float = START_TIMEOUT_S) -> str:
        async def found() -> str | None:
            if self.proc.returncode is not None and self._reader.done():
                raise AssertionError(f"exited ({self.proc.returncode}) before {needle!r}:\n{self.output}")
            return next((line for line in self.lines if needle in line), None)

        return str(await wait_for(found, timeout_s=timeout_s, what=f"{needle!r} in:\n{self.output[-3000:]}"))

    async def finish(self, sig: signal.Signals, timeout_s: float = 30.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await self.wait(timeout_s)

    async def wait(self, timeout_s: float = 30.0) -> int:
        async with asyncio.timeout(timeout_s):
            code = await self.proc.wait()
            await self._reader
        return code

    async def kill_group(self) -> None:
        """Teardown: whatever is left of the process group (a test that failed half-way)."""
        if self.proc.returncode is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        await self._reader


@asynccontextmanager
async def child(*args: str, cwd: Path) -> AsyncIterator[Child]:
    proc = await Child.start(*args, cwd=cwd)
    try:
        yield proc
    finally:
        await proc.kill_group()


# --- the daemon ------------------------------------------------------------------------------------


async def _engine(db_url: str) -> AsyncEngine:
    return await connect(db_url, connect_retries=0)


async def _alert_state(db_url: str) -> tuple[str | None, str | None]:
    engine = await _engine(db_url)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(select(AlertStateRow.state, AlertStateRow.notified_status))).one_or_none()
    finally:
        await engine.dispose()
    return (row[0], row[1]) if row is not None else (None, None)


async def _rows(db_url: str) -> int:
    engine = await _engine(db_url)
    try:
        return await Store.from_engine(engine).count_results()
    finally:
        await engine.dispose()


def _sqlite_integrity(db_url: str) -> str:
    path = make_url(db_url).database
    assert path is not None and Path(path).exists()
    with sqlite3.connect(path) as conn:  # replays the WAL the killed process left, as any next opener does
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


async def _postgres_sane(db_url: str) -> None:
    """Every table answers, and the indexes agree with the rows (an index scan count = a seq scan count)."""
    engine = await _engine(db_url)
    try:
        async with engine.connect() as conn:
            tables = (await conn.execute(text("select tablename from pg_tables where schemaname = 'public'"))).all()
            for (table,) in tables:
                await conn.execute(text(f'select * from "{table}"'))
            await conn.execute(text("set enable_seqscan = off"))
            by_index = (await conn.execute(text("select count(*) from probe_results where probe = 'chat'"))).one()
            for setting in ("enable_seqscan = on", "enable_indexscan = off", "enable_bitmapscan = off"):
                await conn.execute(text(f"set {setting}"))
            by_scan = (await conn.execute(text("select count(*) from probe_results where probe = 'chat'"))).one()
            assert by_index == by_scan
    finally:
        await engine.dispose()


def _firing(hook: WebhookReceiver) -> list[ReceivedRequest]:
    return [r for r in hook.delivered() if r.json["status"] == "firing"]


@pytest.mark.timeout(120)
async def test_kill_9_mid_run_then_restart(mock: MockProcess, db_url: str, tmp_path: Path) -> None:
    async with WebhookReceiver() as hook:
        raw = daemon_config(
            mock.base_url, db_url, chat_probe(interval_s=0.3, max_tokens=64),
            completion_probe(interval_s=0.3, max_tokens=8), rules=[RULE],
            receivers=[{"name": "ops", "url": hook.url, "format": "generic"}],
            daemon={"shutdown_grace_s": 5, "absence_eval_interval_s": 1},
        )  # fmt: skip
        config = tmp_path / "monitor.yaml"
        config.write_text(yaml.safe_dump(raw), encoding="utf-8")
        mock.configure(status=503)

        async with child("run", "-c", str(config), cwd=tmp_path) as first:
            await first.line("llm-monitor daemon running")
            await wait_for(lambda: len(_firing(hook)) == 1, timeout_s=20, what="the firing notification")
            # Mid-run: results are being written several times a second when the process dies.
            before = await _rows(db_url)
            await wait_for(lambda: _more_rows(db_url, before + 4), what="more results")
            assert await first.finish(signal.SIGKILL) == -signal.SIGKILL
        assert "daemon stopped after" not in first.output  # no shutdown ran: a real crash

        # The database as the killed process left it.
        if db_url.startswith("sqlite"):
            assert _sqlite_integrity(db_url) == "ok"
        else:
            await _postgres_sane(db_url)
        assert await _alert_state(db_url) == ("firing", "firing")
        rows_after_kill = await _rows(db_url)

        # Restarted while the target still fails: the alert is known to be firing, so no new message.
        async with child("run", "-c", str(config), cwd=tmp_path) as second:
            await second.line("llm-monitor daemon running")
            # On PostgreSQL the killed replica's lease must run out first (daemon.lease_ttl_s, 15 s by default).
            await wait_for(lambda: _more_rows(db_url, rows_after_kill + 6), timeout_s=45, what="results after restart")
            await asyncio.sleep(1.5)  # a few absence/alert evaluation rounds
            assert len(hook.received) == 1, [r.json["status"] for r in hook.received]

            mock.reset()
            await wait_for(lambda: len(hook.delivered()) == 2, timeout_s=20, what="the resolved notification")
            assert await second.finish(signal.SIGTERM) == 0, second.output[-3000:]
        assert "Traceback" not in first.output + second.output

    firing, resolved = hook.delivered()
    assert (firing.json["status"], resolved.json["status"]) == ("firing", "resolved")
    assert firing.json["alert"]["fingerprint"] == resolved.json["alert"]["fingerprint"]
    assert firing.headers["Idempotency-Key"] != resolved.headers["Idempotency-Key"]
    assert len(hook.received) == 2  # nothing re-notified, nothing retried
    assert await _alert_state(db_url) == ("resolved", "resolved")


async def _more_rows(db_url: str, n: int) -> bool:
    return await _rows(db_url) >= n


# --- the load-test runner -------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def _load_run(engine: AsyncEngine, run_id: int = 1) -> Any:
    return await LoadStore.from_engine(engine).get_run(run_id)


async def _running(engine: AsyncEngine) -> bool:
    try:
        run = await _load_run(engine)
    except Exception:  # the runner has not created the schema yet
        return False
    return run is not None and run.status == "running" and bool(await LoadStore.from_engine(engine).series(1))


@pytest.mark.load
@pytest.mark.timeout(120)
async def test_load_runner_killed_mid_run_is_marked_aborted_at_the_next_start(
    mock: MockProcess, sqlite_db_url: str, tmp_path: Path
) -> None:
    """SIGKILL leaves the run `running`; Locust dies with its runner; the next run marks it aborted.

    The next run does that once the dead run's heartbeat is older than 120 s (a live run on another
    machine refreshes it every 2 s). The test moves the heartbeat back instead of waiting 2 minutes.
    """
    engine = create_engine(sqlite_db_url)
    try:
        await ensure_schema(engine)
        load = ["loadtest", "--base-url", mock.base_url, "--db", sqlite_db_url, "--users", "2"]
        async with child(*load, "--duration", "60s", cwd=tmp_path) as runner:
            await wait_for(lambda: _running(engine), timeout_s=30, what="the run under way")
            locusts = _children(runner.proc.pid)
            assert locusts, "the runner has Locust children"
            assert await runner.finish(signal.SIGKILL) == -signal.SIGKILL
            # Locust children get SIGTERM when their runner dies (PR_SET_PDEATHSIG): no load is left behind.
            await wait_for(lambda: not any(_alive(p) for p in locusts), timeout_s=20, what="Locust to exit")
        killed = await _load_run(engine)
        assert killed.status == "running" and killed.ended_at is None

        # Two minutes later (moved, not waited), the next run finds it.
        async with engine.begin() as conn:
            await conn.execute(update(LoadRunRow).values(heartbeat_at=datetime.now(UTC) - timedelta(seconds=121)))
        async with child(*load, "--duration", "3s", cwd=tmp_path) as nxt:
            assert await nxt.wait(timeout_s=60) == 0, nxt.output[-3000:]
        assert "marked 1 stale running load runs as aborted: [1]" in nxt.output
        aborted = await _load_run(engine)
        assert aborted.status == "aborted" and "killed" in (aborted.abort_reason or ""), aborted
        assert aborted.ended_at is not None
        latest = await _load_run(engine, 2)
        assert latest is not None and latest.status == "completed"
    finally:
        await engine.dispose()
