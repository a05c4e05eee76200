"""A daemon held off its core must not blame its target: the loop-lag watch and the scheduler's voided runs.

The real case: on a machine whose cores are busy (a CI runner beside a real inference server, a
laptop compiling) the daemon's process may not run for seconds. Every deadline that passed meanwhile
fires the moment it runs again, so a probe whose reply sat in the socket all along reads as a
timeout, and a consecutive-failures rule pages someone about a healthy server. Here the daemon is a
real `python -m monitor run` process, stopped with SIGSTOP while its probe waits on the real mock.
The scrape and doctor jobs are run in this test's own loop, which a blocking callback holds.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from pytest_aiohttp import AiohttpServer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from monitor.config import parse_settings
from monitor.doctor.runner import diagnose
from monitor.doctor_jobs import DoctorJobs
from monitor.loop_lag import STALL_MIN_S, LoopLag
from monitor.scrape_jobs import ServerScrapes
from monitor.store.db import connect
from monitor.store.models import ProbeResultRow
from monitor.store.models_server_metrics import ServerMetricRow
from monitor.store.server_metrics_repo import ServerMetricsStore
from tests.conftest import chat_probe
from tests.mockserver import MockProcess, serve_raw
from tests.receivers import WebhookReceiver
from tests.test_crash import child
from tests.test_daemon import daemon_config, wait_for
from tests.test_hostile_wire import MIB, _big_routes, _gzip_bomb, _serve

STOP_S = 4.0  # twice the target's timeout
TIMEOUT_S = 2
RULE = {"name": "chat-failing", "kind": "consecutive_failures", "count": 1, "scope": {"probe": "chat"}}


def test_a_recorded_stall_counts_for_what_it_overlapped() -> None:
    lag = LoopLag()
    lag.observe(0.5, now_s=10.0)  # the loop ran nothing from 9.5 to 10.0
    lag.observe(STALL_MIN_S / 2, now_s=10.4)  # noise: not kept as a stall
    assert lag.worst_s(9.0, now_s=11.0) == 0.5
    assert lag.worst_s(9.8, now_s=11.0) == pytest.approx(0.2)  # only the part after the run began held it up
    assert lag.worst_s(10.1, now_s=11.0) == 0.0  # over before the run began


async def test_a_stall_still_going_on_is_seen_before_the_ticker_runs_again() -> None:
    lag = LoopLag(tick_s=0.05)
    stop = asyncio.Event()
    ticker = asyncio.create_task(lag.run(stop))
    try:
        await asyncio.sleep(0.2)
        start_s = time.monotonic()
        time.sleep(0.5)  # noqa: ASYNC251 (the point: this loop is held, as a stopped process is)
        # Nothing else has run in this loop yet, the ticker neither: the stall is seen as it ends.
        assert lag.worst_s(start_s) >= 0.4
        await asyncio.sleep(0.1)
        assert lag.worst_s(start_s) >= 0.4  # and once the ticker has run, as a recorded stall
    finally:
        stop.set()
        await ticker


@asynccontextmanager
async def _watched() -> AsyncIterator[LoopLag]:
    """A loop-lag watch ticking in this test's loop, as the daemon's does in its own."""
    lag, stop = LoopLag(), asyncio.Event()
    ticker = asyncio.create_task(lag.run(stop))
    try:
        await asyncio.sleep(0.3)
        yield lag
    finally:
        stop.set()
        await ticker


def _stall_soon(after_s: float, for_s: float) -> None:
    """Hold this loop for ``for_s`` seconds, ``after_s`` from now: what a stopped or starved process sees."""
    asyncio.get_running_loop().call_later(after_s, time.sleep, for_s)


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.read(65536):  # the request; no answer, ever, until the client gives up
            pass
    finally:
        writer.close()


async def _scrape_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(ServerMetricRow))).scalar_one())


async def test_a_scrape_that_failed_while_the_daemon_stalled_is_not_stored(engine: AsyncEngine) -> None:
    async with serve_raw(_hang) as root, aiohttp.ClientSession() as session, _watched() as lag:
        settings = parse_settings(
            {"targets": [{"name": "hung", "base_url": root + "/v1", "metrics": {"interval_s": 60, "timeout_s": 1}}]}
        )
        scrapes = ServerScrapes(
            session, ServerMetricsStore(async_sessionmaker(engine, expire_on_commit=False)), settings, loop_lag=lag
        )
        # A /metrics that does not answer, the daemon running freely: a real failure, stored.
        first = await scrapes.scrape("hung")
        assert first is not None and first.sample is None and await _scrape_rows(engine) == 1
        # The same, but the daemon is held for 1.5 s during it: the timeout is the daemon's.
        _stall_soon(0.2, 1.5)
        second = await scrapes.scrape("hung")
        assert second is not None and second.sample is None
        assert await _scrape_rows(engine) == 1 and scrapes.stalled == 1 and scrapes.failures == 1


def _stalled(diagnose: Any, *, stalls: int) -> Any:
    """``diagnose``, the loop held 3 s as each of its first ``stalls`` calls begins (a stopped process)."""
    left = [stalls]

    async def held(*args: Any, **kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            time.sleep(3.0)  # noqa: ASYNC251 (the point: the loop is held)
        return await diagnose(*args, **kwargs)

    return held


def _doctor_jobs(
    mock: MockProcess, engine: AsyncEngine, session: aiohttp.ClientSession, lag: LoopLag, sink: Any
) -> DoctorJobs:
    target = {"name": "mock", "base_url": mock.base_url, "model": "glm-4-9b-chat", "timeout_s": 2,
              "doctor": {"fingerprint": {"enabled": False}}}  # fmt: skip
    settings = parse_settings({"targets": [target]})
    return DoctorJobs(session, async_sessionmaker(engine, expire_on_commit=False), settings, sink=sink, loop_lag=lag)


async def test_a_doctor_run_that_stalled_once_is_run_again_and_judged(
    mock: MockProcess, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with aiohttp.ClientSession() as session, _watched() as lag:
        jobs = _doctor_jobs(mock, engine, session, lag, None)
        monkeypatch.setattr("monitor.doctor_jobs.diagnose", _stalled(diagnose, stalls=1))
        run = await jobs.run_now("mock")
    assert run is not None and run.error is None and run.findings, run
    assert "stalled 3.0 s during the run; running it again" in caplog.text
    assert [r.error for r in await jobs.store.history("mock", limit=5)] == [None]  # the stalled try is no run


async def test_a_doctor_run_during_a_stall_gives_no_verdicts(
    mock: MockProcess, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Sink:
        told = 0

        async def on_deployment(self, observations: object) -> None:
            self.told += 1

    sink = Sink()
    async with aiohttp.ClientSession() as session, _watched() as lag:
        jobs = _doctor_jobs(mock, engine, session, lag, sink)
        judged = await jobs.run_now("mock")
        assert judged is not None and judged.error is None and judged.findings and sink.told == 1
        # Held longer than a request's timeout at the start of the run and of the run again at once.
        monkeypatch.setattr("monitor.doctor_jobs.diagnose", _stalled(diagnose, stalls=2))
        voided = await jobs.run_now("mock")
    assert voided is not None and voided.findings == () and voided.exit_code == 2
    assert voided.error is not None and re.fullmatch(r"this daemon's event loop stalled \d+\.\d s", voided.error)
    assert sink.told == 1  # nothing judged, so nothing for the alert engine
    (stored,) = [run for run in await jobs.store.history("mock", limit=5) if run.id == voided.id]
    assert stored.error == voided.error


def _running(mock: MockProcess) -> int:
    with urllib.request.urlopen(mock.root_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(r"^vllm:num_requests_running(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    assert match is not None, text[:500]
    return int(float(match.group(1)))


async def _kinds(db_url: str) -> dict[str, list[str | None]]:
    engine = await connect(db_url, connect_retries=0)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(ProbeResultRow.probe, ProbeResultRow.error_kind))).all()
    finally:
        await engine.dispose()
    kinds: dict[str, list[str | None]] = {}
    for probe, kind in rows:
        kinds.setdefault(probe, []).append(kind)
    return kinds


async def _stored(db_url: str, count: int) -> bool:
    return sum(len(kinds) for kinds in (await _kinds(db_url)).values()) >= count


async def _in_flight(mock: MockProcess) -> None:
    """Until the mock holds a request (it waits ``ttft_ms`` before its first token)."""
    await wait_for(lambda: asyncio.to_thread(_running, mock), timeout_s=20, what="a probe in flight at the mock")


@pytest.mark.timeout(120)
async def test_a_stopped_daemon_voids_its_runs_and_raises_no_alert(
    mock: MockProcess, sqlite_db_url: str, tmp_path: Path
) -> None:
    mock.configure(ttft_ms=1000)  # well inside the 2 s timeout: the server is healthy
    async with WebhookReceiver() as hook:
        raw = daemon_config(
            mock.base_url, sqlite_db_url, chat_probe(interval_s=1, max_tokens=512), rules=[RULE],
            receivers=[{"name": "ops", "url": hook.url, "format": "generic"}],
            daemon={"shutdown_grace_s": 5, "absence_eval_interval_s": 1},
        )  # fmt: skip
        raw["targets"][0]["timeout_s"] = TIMEOUT_S
        config = tmp_path / "monitor.yaml"
        config.write_text(yaml.safe_dump(raw), encoding="utf-8")
        async with child("run", "-c", str(config), cwd=tmp_path) as daemon:
            await daemon.line("llm-monitor daemon running")
            for _ in range(2):
                await _in_flight(mock)
                os.kill(daemon.proc.pid, signal.SIGSTOP)
                try:
                    await asyncio.sleep(STOP_S)  # the probe's deadline passes while the daemon cannot run
                finally:
                    os.kill(daemon.proc.pid, signal.SIGCONT)
                await asyncio.sleep(3)  # a few more runs, and alert evaluations, after the stall
            # Runs the daemon recorded (a busy machine may void more than the two stopped ones).
            await wait_for(lambda: _stored(sqlite_db_url, 4), timeout_s=60, what="4 stored results")
            assert await daemon.finish(signal.SIGTERM) == 0, daemon.output[-3000:]

    kinds = (await _kinds(sqlite_db_url))["chat"]
    assert len(kinds) >= 4
    assert [kind for kind in kinds if kind is not None] == []  # no timeout blamed on the target
    assert [r.json["alert"] for r in hook.received] == []  # nobody was paged
    output = daemon.output
    assert "Traceback" not in output
    stalled = re.findall(r"probe chat: this daemon's event loop stalled (\d+\.\d) s", output)
    assert len([s for s in stalled if float(s) >= STOP_S - 1]) >= 2, output[-3000:]  # each stop was seen
    summary = re.search(r"(\d+) voided \(this daemon stalled\)", output)
    assert summary is not None and int(summary.group(1)) >= 2, output[-2000:]


@pytest.mark.timeout(120)
async def test_a_hostile_reply_is_recorded_not_voided(
    aiohttp_server: AiohttpServer, sqlite_db_url: str, tmp_path: Path
) -> None:
    """The watch must not take the daemon's own work on a hostile reply for a stall, and hide the failure.

    50 MiB replies, 40 MB of events and a gzip bomb, each cut at the default 8 MiB cap, every second.
    """
    root = await _serve(aiohttp_server, _big_routes(_gzip_bomb(256 * MIB)))
    hostile = ("big", "stream", "bomb")
    raw = {
        "storage": {"url": sqlite_db_url},
        "targets": [{"name": w, "base_url": f"{root}/{w}/v1", "timeout_s": 10} for w in hostile],
        "probes": [
            {"name": w, "target": w, "endpoint": "chat", "stream": w == "stream", "interval_s": 1,
             "messages": [{"role": "user", "content": "hi"}]}
            for w in hostile
        ],
        "api": {"port": 0},
        "daemon": {"shutdown_grace_s": 5},
    }  # fmt: skip
    config = tmp_path / "monitor.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")

    async def recorded() -> bool:
        kinds = await _kinds(sqlite_db_url)
        return all(len(kinds.get(w, [])) >= 3 for w in hostile)

    async with child("run", "-c", str(config), cwd=tmp_path) as daemon:
        await daemon.line("llm-monitor daemon running")
        await wait_for(recorded, timeout_s=60, what="three recorded results of each hostile probe")
        assert await daemon.finish(signal.SIGTERM) == 0, daemon.output[-3000:]
    kinds = await _kinds(sqlite_db_url)
    assert {w: set(kinds[w]) for w in hostile} == {w: {"body_too_large"} for w in hostile}
    assert "Traceback" not in daemon.output
