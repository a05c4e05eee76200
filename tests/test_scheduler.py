"""Scheduling against real targets: a hung target, reschedules on reload, crontabs, the result writer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor import scheduler as scheduler_module
from monitor.config import ProbeSettings, Settings, TargetSettings, parse_settings
from monitor.errors import ConfigError
from monitor.exposition import ProbeMetrics
from monitor.probes import Prober
from monitor.results import ProbeResult
from monitor.scheduler import SPREAD_MAX_S, ProbeScheduler, build_trigger
from monitor.store.db import connect, ensure_schema
from monitor.store.repo import Store
from monitor.store.writer import ResultWriter
from tests.conftest import chat_probe
from tests.mockserver import MockProcess
from tests.test_daemon import wait_for
from tests.test_rollups import make_result


@pytest.fixture(name="engine")
async def fix_engine(sqlite_db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await connect(sqlite_db_url)
    try:
        await ensure_schema(engine)
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(name="session")
async def fix_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _settings(targets: dict[str, str], *probes: dict[str, Any], **daemon: Any) -> Settings:
    return parse_settings({
        "targets": [{"name": n, "base_url": url, "timeout_s": 30, "chunk_timeout_s": 30} for n, url in targets.items()],
        "probes": list(probes),
        "daemon": daemon,
    })  # fmt: skip


@asynccontextmanager
async def running_scheduler(
    settings: Settings, engine: AsyncEngine, session: aiohttp.ClientSession
) -> AsyncIterator[ProbeScheduler]:
    """A started ProbeScheduler with its writer; in-flight runs are cancelled at the end (no grace)."""
    writer = ResultWriter(Store.from_engine(engine))
    writer_task = asyncio.create_task(writer.run())
    scheduler = ProbeScheduler(settings, prober=Prober(session), writer=writer, metrics=ProbeMetrics())
    scheduler.start()
    try:
        yield scheduler
    finally:
        scheduler.pause()
        await scheduler.drain(0.0, asyncio.Event())
        await scheduler.shutdown()
        await writer.close()
        await writer_task


async def test_a_hung_target_does_not_delay_other_probes(
    mock: MockProcess, engine: AsyncEngine, session: aiohttp.ClientSession
) -> None:
    with MockProcess(stall_after=0) as stalled:
        settings = _settings(
            {"stuck": stalled.base_url, "mock": mock.base_url},
            chat_probe(name="hung", target="stuck", interval_s=0.5),
            chat_probe(name="healthy", target="mock", interval_s=0.5, max_tokens=64),
            max_concurrent_probes=2,
        )
        store = Store.from_engine(engine)
        async with running_scheduler(settings, engine, session) as scheduler:
            # Six healthy runs while the hung probe's first request is still waiting for a byte.
            await wait_for(lambda: _at_least(store, "healthy", 6), timeout_s=20, what="six healthy results")
            assert await store.count_results(probe="hung") == 0
            assert scheduler.stats.skipped_busy >= 1  # the hung probe's later runs, skipped while it hangs
            assert scheduler.inflight >= 1
    assert scheduler.stats.cancelled == 1
    healthy = await store.recent_results(probe="healthy", limit=100)
    assert all(r.ok for r in healthy)


async def test_a_probe_slower_than_its_interval_logs_its_skips_once_not_per_start(
    mock: MockProcess, engine: AsyncEngine, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    mock.configure(ttft_ms=1500)  # every run takes three of its 0.5 s intervals
    settings = _settings({"mock": mock.base_url}, chat_probe(name="slow", interval_s=0.5, max_tokens=64))
    caplog.set_level(logging.WARNING)
    async with running_scheduler(settings, engine, session) as scheduler:
        await wait_for(lambda: scheduler.stats.skipped_busy >= 6, timeout_s=30, what="six skipped starts")
    apscheduler = [r for r in caplog.records if r.name.startswith("apscheduler") and "probe:slow" in r.getMessage()]
    assert apscheduler == []  # not one warning per skipped start
    ours = [r.getMessage() for r in caplog.records if r.name == "monitor.scheduler" and "skipped" in r.getMessage()]
    assert ours == [
        "probe slow: 1 start skipped: the previous run was still going (a run takes longer than the interval); "
        'every skip is counted in llm_monitor_probe_runs_skipped_total{reason="busy"}'
    ]


async def _at_least(store: Store, probe: str, n: int) -> bool:
    return await store.count_results(probe=probe) >= n


class _DeafProber(Prober):
    """A prober that ignores its own deadlines: the bug the scheduler's outer bound is there for."""

    async def run(self, target: TargetSettings, probe: ProbeSettings, api_key: str | None = None) -> ProbeResult:
        await asyncio.Event().wait()
        raise AssertionError("never woken")


async def test_the_outer_bound_stores_the_probers_timeout_result(
    engine: AsyncEngine, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "TIMEOUT_SLACK_S", 0.0)
    settings = parse_settings({
        "targets": [{"name": "mock", "base_url": "http://127.0.0.1:1/v1", "timeout_s": 0.2}],
        "probes": [chat_probe(name="deaf", interval_s=0.5, max_tokens=32)],
    })  # fmt: skip
    store = Store.from_engine(engine)
    writer = ResultWriter(store)
    writer_task = asyncio.create_task(writer.run())
    scheduler = ProbeScheduler(settings, prober=_DeafProber(session), writer=writer, metrics=ProbeMetrics())
    scheduler.start()
    try:
        await wait_for(lambda: _at_least(store, "deaf", 1), timeout_s=10, what="a timed-out result")
    finally:
        scheduler.pause()
        await scheduler.drain(0.0, asyncio.Event())
        await scheduler.shutdown()
        await writer.close()
        await writer_task
    stored = (await store.recent_results(probe="deaf"))[-1]
    assert (stored.ok, stored.error_kind, stored.timeout_phase) == (False, "timeout", "total")
    # The same result the prober makes when its own total deadline passes.
    assert stored.error_detail == "request exceeded timeout_s=0.2" and stored.max_tokens == 32
    assert stored.latency_ms is not None and stored.latency_ms >= 200.0


async def test_apply_adds_removes_and_reschedules_only_what_changed(
    mock: MockProcess, engine: AsyncEngine, session: aiohttp.ClientSession
) -> None:
    keep, move, drop = (chat_probe(name=n, interval_s=600) for n in ("keep", "move", "drop"))
    settings = _settings({"mock": mock.base_url}, keep, move, drop)
    async with running_scheduler(settings, engine, session) as scheduler:
        before = scheduler.next_runs()
        assert set(before) == {"keep", "move", "drop"}
        new = _settings(
            {"mock": mock.base_url},
            {**keep, "max_tokens": 9},  # not a schedule change: keeps its phase
            {**move, "interval_s": 0.2},
            chat_probe(name="new", interval_s=0.2),
        )
        scheduler.apply(new)
        after = scheduler.next_runs()
        assert set(after) == {"keep", "move", "new"}
        assert after["keep"] == before["keep"]
        assert after["move"] is not None and before["move"] is not None and after["move"] < before["move"]
        store = Store.from_engine(engine)
        await wait_for(lambda: _at_least(store, "new", 1), what="a result of the new probe")


def test_triggers_spread_interval_probes_and_validate_crontabs() -> None:
    now = datetime(2026, 11, 20, tzinfo=UTC)
    probe = parse_settings(
        {"targets": [{"name": "mock", "base_url": "http://127.0.0.1:1/v1"}],
         "probes": [chat_probe(interval_s=300, jitter_s=5)]}
    ).probes[0]  # fmt: skip
    trigger = build_trigger(probe, now=now)
    assert isinstance(trigger, IntervalTrigger) and trigger.jitter == 5
    assert now <= trigger.start_date < now + timedelta(seconds=SPREAD_MAX_S)
    # The phase is a function of the name: the same after every restart.
    assert build_trigger(probe, now=now).start_date == trigger.start_date

    cron = probe.model_copy(update={"cron": "*/5 * * * *"})
    assert isinstance(build_trigger(cron), CronTrigger)
    good = _settings({"mock": "http://127.0.0.1:1/v1"}, chat_probe(name="ok", cron="0 9 * * mon-fri"))
    assert build_trigger(good.probes[0]).get_next_fire_time(None, now) is not None
    # A bad crontab is a config error as soon as the settings are built (check-config, run, SIGHUP).
    with pytest.raises(ConfigError, match=r"^probes\[1\]\.cron: invalid crontab '61 \* \* \* \*'"):
        _settings(
            {"mock": "http://127.0.0.1:1/v1"}, chat_probe(name="ok", cron="0 9 * * mon-fri"),
            chat_probe(name="bad", cron="61 * * * *"),
        )  # fmt: skip
    with pytest.raises(ConfigError, match=r"probes\[0\]\.cron"):
        _settings({"mock": "http://127.0.0.1:1/v1"}, chat_probe(cron="* * *"))


async def test_writer_keeps_order_and_survives_a_failing_handler(engine: AsyncEngine) -> None:
    seen: list[str] = []

    async def on_stored(result: ProbeResult) -> None:
        seen.append(result.probe)
        if result.probe == "p1":
            raise RuntimeError("an alert engine bug")

    writer = ResultWriter(Store.from_engine(engine), on_stored=on_stored, max_queue=3)
    task = asyncio.create_task(writer.run())
    now = datetime.now(UTC)
    for i in range(10):  # more than the queue holds: put() waits for the writer
        await writer.put(make_result(now, probe=f"p{i}"))
    await writer.close()
    await task
    assert seen == [f"p{i}" for i in range(10)] and writer.stored == 10 and writer.dropped == 0
    assert await Store.from_engine(engine).count_results() == 10
