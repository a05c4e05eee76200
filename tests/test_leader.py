"""The leadership lease and the SQLite file lock, on real databases, with a clock moved by hand."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.api import create_app
from monitor.config import parse_settings
from monitor.errors import StoreError
from monitor.leader import (
    AlreadyRunning,
    DaemonLock,
    LeaderElection,
    LeaseStore,
    SoleLeader,
    default_replica_id,
    sqlite_database,
)
from monitor.store.db import connect, ensure_schema
from monitor.store.repo import Store

Sessions = async_sessionmaker[AsyncSession]


class HandClock:
    """Wall time for the lease rows and monotonic time for the holder's deadline, moved together."""

    def __init__(self) -> None:
        self._wall = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall += timedelta(seconds=seconds)
        self._mono += seconds


@pytest.fixture(name="sessions")
async def fix_sessions(db_url: str) -> AsyncIterator[Sessions]:
    engine = await connect(db_url)
    try:
        await ensure_schema(engine)
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


@pytest.fixture(name="clock")
def fix_clock() -> HandClock:
    return HandClock()


def _election(sessions: Sessions, clock: HandClock, replica: str, ttl_s: float = 3.0) -> LeaderElection:
    return LeaderElection(LeaseStore(sessions, clock=clock), replica_id=replica, ttl_s=ttl_s, monotonic=clock.monotonic)


async def test_store_takes_renews_hands_over_and_releases(sessions: Sessions, clock: HandClock) -> None:
    store = LeaseStore(sessions, clock=clock)
    assert await store.current() is None
    a = await store.acquire("a", 10)
    assert (a.holder, a.epoch, a.held, a.expires_at) == ("a", 1, True, clock.now() + timedelta(seconds=10))
    b = await store.acquire("b", 10)
    assert (b.holder, b.held, b.valid) == ("a", False, True)

    clock.advance(5)
    assert (await store.acquire("a", 10, epoch=1)).held
    clock.advance(9.9)
    assert not (await store.acquire("b", 10)).held  # renewed at +5: valid until +15
    clock.advance(0.1)
    b = await store.acquire("b", 10)
    assert (b.holder, b.epoch, b.held) == ("b", 2, True)

    # The old term is gone: renewing it fails and names the new holder; so does a fresh attempt.
    lost = await store.acquire("a", 10, epoch=1)
    assert (lost.holder, lost.epoch, lost.held) == ("b", 2, False)
    assert not (await store.acquire("a", 10)).held
    assert not await store.release("a", 1)

    # A release expires the lease at once: the next attempt wins without waiting.
    assert await store.release("b", 2)
    a = await store.acquire("a", 10)
    assert (a.holder, a.epoch, a.held) == ("a", 3, True)
    current = await store.current()
    assert current is not None and (current.holder, current.epoch, current.held) == ("a", 3, False)


async def test_the_same_replica_id_cannot_share_a_term(sessions: Sessions, clock: HandClock) -> None:
    first = _election(sessions, clock, "same-id")
    second = _election(sessions, clock, "same-id")
    await first.attempt()
    await second.attempt()
    assert first.is_leader and not second.is_leader


async def test_a_silent_leader_steps_down_before_anyone_can_take_over(sessions: Sessions, clock: HandClock) -> None:
    a, b = _election(sessions, clock, "a"), _election(sessions, clock, "b")
    assert await a.attempt() == pytest.approx(1.0)  # renew every ttl/3
    assert a.is_leader and (a.role, a.leader, a.epoch) == ("leader", "a", 1)
    assert a.transitions == 1 and a.changed.is_set()
    # A follower sleeps until the lease could expire, at most ttl/3.
    assert await b.attempt() == pytest.approx(1.0)
    assert b.role == "follower" and b.leader == "a" and b.transitions == 0 and not b.changed.is_set()

    # `a` renews at t=1, then falls silent (killed, or cut off from the database).
    clock.advance(1.0)
    await a.attempt()
    timeline: list[tuple[float, bool, bool]] = []
    for _ in range(40):
        clock.advance(0.125)  # exact in binary: the comparisons at the deadline are exact too
        await b.attempt()
        timeline.append((clock.monotonic() - 1001.0, a.is_leader, b.is_leader))
    assert not any(a_leads and b_leads for _, a_leads, b_leads in timeline)
    a_stopped = min(t for t, a_leads, _ in timeline if not a_leads)
    b_started = min(t for t, _, b_leads in timeline if b_leads)
    # `a` stops at its deadline (renewal + ttl - ttl/3) without running any code; `b` wins at expiry.
    assert (a_stopped, b_started) == (2.0, 3.0)
    assert b.epoch == 2 and b.transitions == 1

    await a.attempt()
    assert a.role == "follower" and a.leader == "b" and a.transitions == 2


async def test_a_leader_whose_database_fails_keeps_leading_only_until_its_deadline(
    sessions: Sessions, clock: HandClock, caplog: pytest.LogCaptureFixture
) -> None:
    a = _election(sessions, clock, "a")
    await a.attempt()
    async with sessions() as session, session.begin():
        await session.execute(text("DROP TABLE leases"))
    clock.advance(1.0)
    retry_s = await a.attempt()
    assert a.is_leader and 0 < retry_s <= 0.3  # retries fast while its deadline nears
    assert "lease: cannot reach the database" in caplog.text
    clock.advance(0.5)
    await a.attempt()
    assert caplog.text.count("lease: cannot reach the database") == 1  # said once per outage
    clock.advance(0.5)
    assert not a.is_leader and a.leader is None
    assert await a.attempt() == pytest.approx(1.0)
    assert a.transitions == 2 and a.role == "follower"


async def test_renewing_a_lapsed_term_nobody_took_leads_again(sessions: Sessions, clock: HandClock) -> None:
    a = _election(sessions, clock, "a")
    await a.attempt()
    clock.advance(2.5)  # past its deadline (2 s), before the lease expires (3 s)
    assert not a.is_leader
    await a.attempt()
    assert a.is_leader and a.epoch == 1 and a.transitions == 1  # never announced a step-down: no code ran


async def test_elections_in_real_time_hand_over_after_a_crash_and_after_a_release(db_url: str) -> None:
    """Two replicas with a 0.6 s lease: a crashed leader is replaced within the lease, a released one at once."""
    ttl_s = 0.6
    engine = await connect(db_url)
    try:
        await ensure_schema(engine)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        a = LeaderElection(LeaseStore(sessions), replica_id="a", ttl_s=ttl_s)
        b = LeaderElection(LeaseStore(sessions), replica_id="b", ttl_s=ttl_s)
        stop_a, stop_b = asyncio.Event(), asyncio.Event()
        await a.attempt()
        run_a = asyncio.create_task(a.run(stop_a))
        run_b = asyncio.create_task(b.run(stop_b))
        both: list[float] = []

        async def watch(seconds: float, until: LeaderElection | None = None) -> float:
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                if a.is_leader and b.is_leader:
                    both.append(time.monotonic())
                if until is not None and until.is_leader:
                    return time.monotonic() - started
                await asyncio.sleep(0.005)
            return time.monotonic() - started

        await watch(1.5)
        assert a.is_leader and not b.is_leader and b.leader == "a"

        stop_a.set()  # a crash: the loop ends and nothing releases the lease, so it runs out
        await run_a
        crashed = time.monotonic()
        took_s = await watch(5.0, until=b)
        assert b.is_leader, "the follower never took over"
        # The bound: the lease (renewed at most ttl/3 before the crash) expires within ttl of it.
        assert time.monotonic() - crashed <= ttl_s + 0.3, took_s

        stop_a = asyncio.Event()
        run_a = asyncio.create_task(a.run(stop_a))
        await watch(0.5)
        stop_b.set()
        await run_b
        await b.release()
        released = time.monotonic()
        await watch(5.0, until=a)
        assert a.is_leader and time.monotonic() - released <= ttl_s / 3 + 0.3
        assert both == []
        stop_a.set()
        await run_a
        await a.release()
        assert not a.is_leader
    finally:
        await engine.dispose()


async def test_sole_leader_always_leads() -> None:
    sole = SoleLeader("only")
    assert sole.is_leader and sole.leader == "only" and sole.transitions == 1 and sole.changed.is_set()
    stop = asyncio.Event()
    stop.set()
    await sole.run(stop)
    await sole.release()
    assert sole.is_leader


def test_default_replica_id_names_host_and_pid() -> None:
    host, pid, suffix = default_replica_id().rsplit(":", 2)
    assert host and pid == str(os.getpid()) and len(suffix) == 4
    assert default_replica_id() != default_replica_id()


# --- one daemon per SQLite file ---------------------------------------------------------------------


def test_daemon_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    database = tmp_path / "monitor.db"
    first, second = DaemonLock(database), DaemonLock(database)
    first.acquire()
    try:
        assert (tmp_path / "monitor.db.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(AlreadyRunning) as refused:
            second.acquire()
        assert str(refused.value) == f"another llm-monitor daemon (pid {os.getpid()}) is using {database}"
    finally:
        first.release()
    second.acquire()
    second.release()


def test_sqlite_database_is_the_absolute_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_database("sqlite:///llm-monitor.db") == tmp_path / "llm-monitor.db"
    assert sqlite_database(f"sqlite+aiosqlite:///{tmp_path}/x/y.db") == tmp_path / "x" / "y.db"
    assert sqlite_database("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_database("postgresql://postgres@127.0.0.1/db") is None
    with pytest.raises(StoreError, match="unsupported database URL"):
        sqlite_database("mysql://x@y/z")


# --- what the API says ------------------------------------------------------------------------------


def _constant(value: bool) -> Callable[[], bool]:
    return lambda: value


async def test_readyz_and_metrics_say_who_leads(
    aiohttp_client: AiohttpClient, sqlite_db_url: str, clock: HandClock
) -> None:
    settings = parse_settings({"storage": {"url": sqlite_db_url}})
    engine = await connect(sqlite_db_url)
    try:
        await ensure_schema(engine)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        leader, follower = _election(sessions, clock, "r1"), _election(sessions, clock, "r2")
        await leader.attempt()
        await follower.attempt()
        clients: list[TestClient[web.Request, web.Application]] = []
        for election, running in ((leader, True), (follower, False)):
            app = create_app(
                settings, store=Store.from_engine(engine), db=engine, scheduler_running=_constant(running),
                leadership=election,
            )  # fmt: skip
            clients.append(await aiohttp_client(app))

        resp = await clients[0].get("/readyz")
        assert resp.status == 200
        assert await resp.json() == {
            "ready": True, "checks": {"database": "ok", "scheduler": "running"}, "role": "leader", "leader": "r1",
            "replica": "r1",
        }  # fmt: skip
        # A follower serves the API, so it is ready although its scheduler does not run.
        resp = await clients[1].get("/readyz")
        body = await resp.json()
        assert resp.status == 200 and body["ready"] is True
        assert (body["role"], body["leader"], body["replica"]) == ("follower", "r1", "r2")
        assert body["checks"]["scheduler"].startswith("standby")

        for client, replica, value in ((clients[0], "r1", 1.0), (clients[1], "r2", 0.0)):
            resp = await client.get("/metrics")
            families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
            (gauge,) = families["llm_monitor_leader"].samples
            assert (gauge.labels, gauge.value) == ({"replica": replica}, value)
            (changes,) = families["llm_monitor_leader_transitions"].samples
            assert changes.value == (1.0 if replica == "r1" else 0.0)
    finally:
        await engine.dispose()
