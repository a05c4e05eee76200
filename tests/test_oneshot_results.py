"""One-shot results (`llm-monitor probe`, `llm-monitor doctor`) stay apart from the daemon's, on both backends.

The daemon's config is the config a user runs `probe -c` with, so one-shot results carry the
daemon's own probe names: only the `source` column tells them apart. Trends, rollups and the
dashboard must leave them out (and list them on their own); migration 0006 adds the column and
the foreign key from `probe_results.load_run_id` to `load_runs`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy import bindparam, delete, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from monitor.alerts.source import RawWindowSource, ResultHistory
from monitor.cli_doctor import doctor_settings
from monitor.config import Settings, load_settings
from monitor.doctor import doctor
from monitor.errors import StoreError
from monitor.loadtest.repo import LoadStore
from monitor.oneshot import probe_once
from monitor.store.db import connect, create_engine, downgrade, upgrade
from monitor.store.models import UTCDateTime
from monitor.store.models_loadtest import LoadRunRow
from monitor.store.repo import Store
from monitor.store.rollups import Rollups
from tests.dashboard_data import dashboard_app, result
from tests.mockserver import MockProcess

MODEL = "glm-4-9b-chat"
Client = TestClient[web.Request, web.Application]


def _settings(mock: MockProcess, db_url: str) -> Settings:
    """The default probe set on target `default`: what both the daemon and `llm-monitor probe` run."""
    return load_settings(None, base_url=mock.base_url, model=MODEL, db_url=db_url)


# --- migration 0006 and the foreign key ------------------------------------------------------------------------


async def test_migration_0006_marks_old_rows_daemon_and_unlinks_orphans(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        await upgrade(engine, "0005")
        now = datetime.now(UTC)
        run_id = await LoadStore.from_engine(engine).create_run(
            started_at=now, target="t", base_url="http://127.0.0.1:1/v1", model=None, params={}, baseline_id=None
        )
        row = text(
            "INSERT INTO probe_results (started_at, probe, target, endpoint, stream, ok, truncated, checks,"
            " failed_checks, load_run_id) VALUES (:at, :probe, 't', 'chat', true, true, false, '[]', '', :run)"
        ).bindparams(bindparam("at", type_=UTCDateTime()))
        async with engine.begin() as conn:
            # Before 0006 nothing stopped a run id that names no run.
            await conn.execute(row, {"at": now, "probe": "orphan", "run": run_id + 100})
            await conn.execute(row, {"at": now, "probe": "linked", "run": run_id})
        await upgrade(engine)
        stored = {r.probe: r for r in await Store.from_engine(engine).recent_results()}
        assert {p: (r.source, r.load_run_id) for p, r in stored.items()} == {
            "orphan": ("daemon", None),
            "linked": ("daemon", run_id),
        }
        await downgrade(engine, "0005")
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM probe_results"))).scalar_one() == 2
    finally:
        await engine.dispose()


async def test_load_run_id_references_a_load_run_and_a_deleted_run_unlinks(engine: AsyncEngine) -> None:
    chat = load_settings(None, base_url="http://127.0.0.1:1/v1").probes[0]
    now = datetime.now(UTC)
    store = Store.from_engine(engine)
    with pytest.raises(StoreError, match="cannot write 1 probe results"):
        await store.add_results([result(chat, now)], load_run_id=12345)
    run_id = await LoadStore.from_engine(engine).create_run(
        started_at=now, target="t", base_url="http://127.0.0.1:1/v1", model=None, params={}, baseline_id=None
    )
    (row_id,) = await store.add_results([result(chat, now)], load_run_id=run_id)
    async with async_sessionmaker(engine)() as session, session.begin():
        await session.execute(delete(LoadRunRow).where(LoadRunRow.id == run_id))
    (kept,) = await store.recent_results()
    assert (kept.id, kept.load_run_id) == (row_id, None)


# --- writers mark their results -------------------------------------------------------------------------------


async def test_probe_and_doctor_results_are_marked_one_shot(mock: MockProcess, db_url: str) -> None:
    settings = _settings(mock, db_url)
    results = await probe_once(settings)
    report = await doctor(*doctor_settings(None, base_url=mock.base_url, model=MODEL, db=db_url))
    engine = await connect(db_url)
    try:
        stored = await Store.from_engine(engine).recent_results(limit=100)
    finally:
        await engine.dispose()
    by_source: dict[str, set[str]] = {}
    for r in stored:
        by_source.setdefault(r.source, set()).add(r.probe)
    assert by_source == {
        "probe": {r.probe for r in results},
        "doctor": {r.probe for r in report.results},
    }


# --- daemon reads leave them out ------------------------------------------------------------------------------


async def test_rollups_and_trends_count_only_daemon_results(engine: AsyncEngine) -> None:
    chat = load_settings(None, base_url="http://127.0.0.1:1/v1").probes[0]
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    store = Store.from_engine(engine)
    daemon = [result(chat, now - timedelta(minutes=m), latency_ms=100.0) for m in range(1, 121, 10)]
    await store.add_results(daemon)
    oneshot = [result(chat, now - timedelta(minutes=m), error="refused") for m in range(2, 121, 10)]
    await store.add_results(oneshot, source="probe")
    rollups = Rollups(async_sessionmaker(engine, expire_on_commit=False))
    await rollups.run(now)
    since, until = now - timedelta(hours=3), now + timedelta(minutes=1)
    for step_s in (60, 3600):
        points = await rollups.trend(since=since, until=until, step_s=step_s, probe=chat.name)
        assert (sum(p.results for p in points), sum(p.errors for p in points)) == (len(daemon), 0), step_s
    window = await rollups.window(since=since, until=until, probe=chat.name)
    assert (window.results, window.errors) == (len(daemon), 0)
    # The raw tail of a long alert window (minutes the rollup job may still revise) too.
    tail = await rollups.settled_window(since=now - timedelta(minutes=5), until=until, probe=chat.name)
    assert (tail.results, tail.errors) == (1, 0)


async def test_dashboard_lists_one_shot_runs_apart(
    mock: MockProcess, db_url: str, engine: AsyncEngine, aiohttp_client: AiohttpClient
) -> None:
    settings = _settings(mock, db_url)
    configured = [p.name for p in settings.probes]
    daemon_probe = settings.probes[0]
    daemon_at = datetime.now(UTC) - timedelta(minutes=5)
    await Store.from_engine(engine).add_results([result(daemon_probe, daemon_at, latency_ms=321.0)])
    await probe_once(settings)  # the same probe names, newer than the daemon's result
    await doctor(*doctor_settings(None, base_url=mock.base_url, model=MODEL, db=db_url))
    client: Client = await aiohttp_client(dashboard_app(settings, engine))

    body = await (await client.get("/api/v1/overview")).json()
    rows = {r["probe"]: r for r in body["rows"]}
    assert list(rows) == configured  # no "not in config" rows for doctor.*
    first = rows[daemon_probe.name]
    assert first["day"]["results"] == 1 and first["last"]["latency_ms"] == 321.0
    assert all(rows[name]["day"]["results"] == 0 and rows[name]["last"] is None for name in configured[1:])
    apart = {(r["source"], r["probe"]) for r in body["oneshot"]}
    assert ("probe", daemon_probe.name) in apart and ("doctor", "doctor.limits") in apart
    assert {r["target"] for r in body["oneshot"]} == {"default"}

    detail = await (await client.get(f"/api/v1/probes/default/{daemon_probe.name}")).json()
    assert [r["latency_ms"] for r in detail["recent"]] == [321.0] and detail["totals"]["results"] == 1
    assert (await client.get("/api/v1/probes/default/doctor.limits")).status == 404

    page = await (await client.get("/")).text()
    assert "not in config" not in page
    head, _, oneshot_part = page.partition("<h2>One-shot runs</h2>")
    assert oneshot_part and "doctor.limits" in oneshot_part and "doctor.limits" not in head


async def test_results_api_filters_by_source(engine: AsyncEngine, aiohttp_client: AiohttpClient) -> None:
    settings = load_settings(None, base_url="http://127.0.0.1:1/v1")
    chat = settings.probes[0]
    now = datetime.now(UTC)
    store = Store.from_engine(engine)
    await store.add_results([result(chat, now - timedelta(minutes=m)) for m in (1, 2)])
    await store.add_results([result(chat, now - timedelta(minutes=3))], source="probe")
    await store.add_results([result(chat, now - timedelta(minutes=4), error="refused")], source="doctor")
    client: Client = await aiohttp_client(dashboard_app(settings, engine))

    async def sources(**params: str) -> list[str]:
        resp = await client.get("/api/v1/results", params=params)
        assert resp.status == 200, await resp.text()
        return [r["source"] for r in await resp.json()]

    # Without `source=` every result, as before; with it, one source's.
    assert await sources() == ["daemon", "daemon", "probe", "doctor"]
    assert await sources(source="daemon") == ["daemon", "daemon"]
    assert await sources(source="probe") == ["probe"]
    assert await sources(source="doctor", probe=chat.name) == ["doctor"]
    resp = await client.get("/api/v1/results", params={"source": "cron"})
    assert resp.status == 400 and await resp.json() == {"error": "source: must be one of daemon, probe, doctor"}


# --- alert windows (monitor/alerts/source.py reads probe_results itself) ---------------------------------------


async def test_raw_alert_windows_leave_out_one_shot_results(engine: AsyncEngine) -> None:
    chat = load_settings(None, base_url="http://127.0.0.1:1/v1").probes[0]
    now = datetime.now(UTC)
    store = Store.from_engine(engine)
    await store.add_results([result(chat, now - timedelta(minutes=3), latency_ms=100.0)])
    await store.add_results([result(chat, now - timedelta(minutes=1), error="refused")], source="probe")
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    since, until = now - timedelta(minutes=10), now
    rate = await RawWindowSource(sessionmaker).aggregate(
        metric="error_rate", agg="rate", probe=chat.name, since=since, until=until
    )
    latest = await ResultHistory(sessionmaker).latest(chat.name, 5)
    assert (rate.value, rate.count) == (0.0, 1)
    assert [r.ok for r in latest] == [True]
