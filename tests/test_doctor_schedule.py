"""The scheduled doctor (`targets[].doctor`) against the real mock process: stored reports, the checks
subset, worse-than-reference observations, error reports, the alert end to end, bad config.

Runs are triggered with `DoctorJobs.run_now` (the job the scheduler calls); the config keeps its
60 s floor. What each check judges is tests/test_doctor.py's subject; here it is only the source
of real verdicts.
"""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.engine import AlertEngine
from monitor.alerts.outbox import Outbox
from monitor.alerts.source import RawWindowSource
from monitor.api import create_app
from monitor.cli import main
from monitor.clock import ManualClock
from monitor.config import Settings, parse_settings
from monitor.deployment import DeploymentObservation
from monitor.doctor_jobs import DoctorJobs, worse
from monitor.store import create_engine, upgrade
from monitor.store.doctor_repo import DoctorStore, StoredFinding
from monitor.store.repo import Store
from monitor.store.rollups import Rollups
from tests.conftest import chat_probe
from tests.mockserver import MockProcess
from tests.receivers import WebhookReceiver
from tests.test_daemon import run_daemon_in_task, wait_for

MODEL = "glm-4-9b-chat"
T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


class Sink:
    """Records what the engine would be told, run by run."""

    def __init__(self) -> None:
        self.runs: list[list[DeploymentObservation]] = []

    async def on_deployment(self, observations: Sequence[DeploymentObservation]) -> None:
        self.runs.append(list(observations))

    def active(self) -> set[str]:
        return {o.key for o in self.runs[-1] if o.active}


def _settings(base_url: str, doctor: dict[str, Any] | None = None, **extra: Any) -> Settings:
    doctor = {"fingerprint": {"enabled": False}} if doctor is None else doctor
    target = {"name": "mock", "base_url": base_url, "model": MODEL, "doctor": doctor}
    return parse_settings({"targets": [target], **extra})


def _jobs(engine: AsyncEngine, http: aiohttp.ClientSession, settings: Settings, sink: Sink) -> DoctorJobs:
    return DoctorJobs(http, async_sessionmaker(engine, expire_on_commit=False), settings, sink=sink)


@pytest.fixture(name="http")
async def fix_http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_scheduled_runs_store_reports_and_results(
    mock: MockProcess, engine: AsyncEngine, http: aiohttp.ClientSession
) -> None:
    sink = Sink()
    jobs = _jobs(engine, http, _settings(mock.base_url), sink)
    first = await jobs.run_now("mock")
    second = await jobs.run_now("mock")
    assert first is not None and second is not None and first.error is None
    assert len(second.findings) == 13 and second.model == MODEL
    history = await jobs.store.history("mock", limit=10)
    assert [r.id for r in history] == [second.id, first.id]
    assert history[0].findings == second.findings
    [latest] = await jobs.store.latest()
    assert latest.id == second.id and latest.to_json()["checks"][0]["id"] == "reachable"
    # As the one-shot CLI: every request's result stored, as source doctor.
    stored = await Store.from_engine(engine).recent_results(source="doctor", limit=1000)
    assert len(stored) >= 2 * 13
    assert all(len(run) == 13 and not any(o.active for o in run) for run in sink.runs)


async def test_a_subset_runs_only_its_checks(
    mock: MockProcess, engine: AsyncEngine, http: aiohttp.ClientSession
) -> None:
    sink = Sink()
    settings = _settings(mock.base_url, {"checks": ["stop_tokens"], "fingerprint": {"enabled": False}})
    run = await _jobs(engine, http, settings, sink).run_now("mock")
    assert run is not None
    assert [f.check_id for f in run.findings] == ["reachable", "stop_tokens"]
    assert [o.key for o in sink.runs[0]] == ["reachable", "stop_tokens"]
    # Only the chat/completion pair (check 1 reads /v1/models, not a probe) and the stop-token check's own requests.
    probes = {r.probe for r in await Store.from_engine(engine).recent_results(source="doctor", limit=100)}
    assert probes == {"doctor.chat_template", "doctor.endpoint_semantics", "doctor.stop_tokens"}


async def test_a_worse_verdict_is_active_and_a_recovery_resolves(
    mock: MockProcess, engine: AsyncEngine, http: aiohttp.ClientSession
) -> None:
    sink = Sink()
    jobs = _jobs(engine, http, _settings(mock.base_url), sink)
    await jobs.run_now("mock")
    assert sink.active() == set()
    mock.configure(no_stop_tokens=True)
    await jobs.run_now("mock")
    assert "stop_tokens" in sink.active()
    stop = next(o for o in sink.runs[-1] if o.key == "stop_tokens")
    assert stop.kind == "doctor" and stop.before == "pass" and stop.after.startswith("fail: ")
    assert stop.fix and stop.summary
    await jobs.run_now("mock")  # still failing: still active (the reference stays pass)
    assert "stop_tokens" in sink.active()
    mock.reset()
    await jobs.run_now("mock")
    assert sink.active() == set() and {o.key for o in sink.runs[-1]} >= {"stop_tokens"}


async def test_the_reference_survives_a_restart(
    mock: MockProcess, engine: AsyncEngine, http: aiohttp.ClientSession
) -> None:
    settings = _settings(mock.base_url)
    await _jobs(engine, http, settings, Sink()).run_now("mock")
    mock.configure(no_chat_template=True)
    await _jobs(engine, http, settings, Sink()).run_now("mock")
    restarted = Sink()
    await _jobs(engine, http, settings, restarted).run_now("mock")
    assert restarted.active() == {"chat_template"}


async def test_an_unchanged_mock_is_never_worse(
    mock: MockProcess, engine: AsyncEngine, http: aiohttp.ClientSession
) -> None:
    sink = Sink()
    jobs = _jobs(engine, http, _settings(mock.base_url), sink)
    for _ in range(25):
        await jobs.run_now("mock")
    assert len(sink.runs) == 25 and all(not any(o.active for o in run) for run in sink.runs)


async def test_an_unreachable_target_is_stored_as_an_error_report(
    engine: AsyncEngine, http: aiohttp.ClientSession
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = Sink()
    jobs = _jobs(engine, http, _settings(f"http://127.0.0.1:{port}/v1"), sink)
    run = await jobs.run_now("mock")
    assert run is not None and run.error and run.exit_code == 2 and run.findings == ()
    [stored] = await jobs.store.history("mock")
    assert stored.error == run.error and "127.0.0.1" in stored.error
    assert sink.runs == [] and jobs.errors == 1


def test_worse_ranks_verdicts() -> None:
    assert worse("fail", "pass") and worse("warn", "pass") and worse("fail", "warn")
    assert not worse("pass", "warn") and not worse("skip", "pass") and not worse("fail", None)
    assert not worse("warn", "warn")


def test_jobs_follow_the_config(http: aiohttp.ClientSession, engine: AsyncEngine) -> None:
    base = "http://127.0.0.1:9/v1"
    settings = parse_settings(
        {
            "targets": [
                {"name": "a", "base_url": base, "doctor": {"interval_s": "2h"}},
                {"name": "b", "base_url": base, "doctor": {"cron": "0 4 * * *"}},
                {"name": "c", "base_url": base},
            ]
        }
    )
    jobs = _jobs(engine, http, settings, Sink())
    built = {name: trigger for name, _, _, trigger in jobs.jobs()}
    assert set(built) == {"doctor:a", "doctor:b"}
    assert isinstance(built["doctor:a"], IntervalTrigger) and built["doctor:a"].interval.total_seconds() == 7200
    assert isinstance(built["doctor:b"], CronTrigger)
    changed = parse_settings(
        {
            "targets": [
                {"name": "a", "base_url": base, "doctor": {"interval_s": "2h"}},
                {"name": "c", "base_url": base, "doctor": {}},
            ]
        }
    )
    assert [name for name, *_ in jobs.apply(changed)] == ["doctor:c"]


async def test_one_knob_one_doctor_alert_at_the_webhook(
    mock: MockProcess, sqlite_db_url: str, http: aiohttp.ClientSession
) -> None:
    db = create_engine(sqlite_db_url)
    try:
        await upgrade(db)
        sessionmaker = async_sessionmaker(db, expire_on_commit=False)
        async with WebhookReceiver() as hook:
            # The fingerprint on too: its drift of the same change is folded into the doctor alert.
            settings = _settings(
                mock.base_url, {}, rules=[{"name": "doc", "kind": "doctor"}, {"name": "drift", "kind": "drift"}],
                receivers=[{"name": "ops", "url": hook.url}],
            )  # fmt: skip
            clock = ManualClock(T0)
            engine = AlertEngine(
                settings, sessionmaker, source=RawWindowSource(sessionmaker), clock=clock, outbox=Outbox(sessionmaker)
            )
            dispatcher = Dispatcher(settings, sessionmaker, http, clock=clock, secrets={}, rng=random.Random(1))
            jobs = DoctorJobs(http, sessionmaker, settings, sink=engine, clock=clock)

            async def run() -> list[tuple[str, str, str]]:
                clock.advance(3600)
                await jobs.run_now("mock")
                before = len(hook.received)
                await dispatcher.dispatch_due()
                return [
                    (
                        r.json["status"],
                        r.json["alert"]["labels"]["alertname"],
                        r.json["alert"]["labels"].get("check", ""),
                    )
                    for r in hook.received[before:]
                ]

            for _ in range(5):
                assert await run() == []
            mock.configure(no_chat_template=True)
            [(status, rule, check)] = await run()
            assert (status, rule, check) == ("firing", "doc", "chat_template")
            annotations = hook.received[-1].json["alert"]["annotations"]
            assert annotations["fix"]
            assert await run() == []  # still failing: no repeat
            mock.reset()
            assert await run() == [("resolved", "doc", "chat_template")]
    finally:
        await db.dispose()


BAD = {
    "unknown-check": ("{checks: [nope]}", "targets[0].doctor.checks[0]"),
    "interval-too-short": ("{interval_s: 5}", "targets[0].doctor.interval_s"),
    "interval-and-cron": ("{interval_s: 120, cron: '0 * * * *'}", "targets[0].doctor"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_doctor_config_is_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doctor, expected = BAD[case]
    path = tmp_path / "monitor.yaml"
    path.write_text(
        f"targets: [{{name: m, base_url: 'http://127.0.0.1:9/v1', doctor: {doctor}}}]\n"
        "probes: [{name: p, target: m, prompt: hi, endpoint: completion}]\n",
        encoding="utf-8",
    )
    with pytest.raises(SystemExit) as exc:
        main(["check-config", "-c", str(path)])
    lines = capsys.readouterr().err.splitlines()
    assert exc.value.code == 2 and len(lines) == 1 and "Traceback" not in lines[0], lines
    assert lines[0].startswith("llm-monitor: error: " + expected), lines


async def test_api_and_dashboard_show_the_reports(
    mock: MockProcess, engine: AsyncEngine, http: aiohttp.ClientSession, aiohttp_client: AiohttpClient
) -> None:
    settings = _settings(mock.base_url)
    jobs = _jobs(engine, http, settings, Sink())
    await jobs.run_now("mock")
    # A reply that would be markup if the page did not escape it.
    mock.configure(model="<script>x</script>")
    await jobs.run_now("mock")
    mock.reset()
    await jobs.run_now("mock")
    app = create_app(settings, store=Store.from_engine(engine), db=engine, rollups=Rollups(async_sessionmaker(engine)))
    client = await aiohttp_client(app)
    resp = await client.get("/api/v1/doctor")
    assert resp.status == 200
    [latest] = (await resp.json())["reports"]
    assert latest["target"] == "mock" and len(latest["checks"]) == 13 and latest["error"] is None
    resp = await client.get("/api/v1/doctor/mock?limit=2")
    history = (await resp.json())["reports"]
    assert [r["id"] for r in history] == [latest["id"], latest["id"] - 1]
    assert history[1]["checks"][0]["status"] == "fail"
    assert (await client.get("/api/v1/doctor/nope")).status == 404
    assert (await client.get("/api/v1/doctor/mock?limit=0")).status == 400
    resp = await client.get("/doctor")
    assert resp.status == 200
    text = await resp.text()
    assert 'href="/doctor"' in text and "Stop tokens" in text and "History (3 runs, newest first)" in text
    assert "<script>x</script>" not in text


async def test_in_the_daemon_one_knob_reaches_the_webhook_once(mock: MockProcess, sqlite_db_url: str) -> None:
    async with WebhookReceiver() as hook:
        settings = parse_settings(
            {
                "storage": {"url": sqlite_db_url},
                "targets": [{"name": "mock", "base_url": mock.base_url, "model": MODEL, "doctor": {}}],
                "probes": [chat_probe(interval_s=60, max_tokens=4)],
                "rules": [{"name": "doc", "kind": "doctor"}, {"name": "drift", "kind": "drift"}],
                "receivers": [{"name": "hook", "url": hook.url}],
                "api": {"port": 0},
                "daemon": {"shutdown_grace_s": 5},
            }
        )
        async with run_daemon_in_task(settings) as daemon, aiohttp.ClientSession() as http:
            # The job the scheduler runs every interval_s (>= 60 s), run now.
            doctor = daemon._running().doctor
            for _ in range(3):
                await doctor.run_now("mock")
            mock.configure(default_max_tokens=3)
            await doctor.run_now("mock")
            await wait_for(lambda: len(hook.received) >= 1, what="the doctor alert")
            await doctor.run_now("mock")
            mock.reset()
            await doctor.run_now("mock")
            await wait_for(lambda: len(hook.received) >= 2, what="the resolution")
            assert daemon.api_url is not None
            async with http.get(daemon.api_url + "/api/v1/doctor/mock?limit=10") as resp:
                assert len((await resp.json())["reports"]) == 6
        got = [
            (r.json["status"], r.json["alert"]["labels"]["alertname"], r.json["alert"]["labels"]["check"])
            for r in hook.received
        ]
        assert got == [("firing", "doc", "sampling_defaults"), ("resolved", "doc", "sampling_defaults")]


async def test_old_reports_are_deleted_with_their_findings(engine: AsyncEngine) -> None:
    store = DoctorStore.from_engine(engine)
    finding = StoredFinding("reachable", "pass", False, "ok")
    for hours in (48, 24, 0):
        at = T0.replace(hour=12) - timedelta(hours=hours)
        await store.add("mock", started_at=at, finished_at=at, exit_code=0, findings=[finding])
    assert await store.delete_before(T0 - timedelta(hours=1), limit=1) == 1
    assert await store.delete_before(T0 - timedelta(hours=1), limit=10) == 1
    [kept] = await store.history("mock")
    assert kept.started_at == T0 and kept.findings == (finding,)
    assert await store.references("mock") == {"reachable": "pass"}


def test_an_interval_doctor_first_runs_soon_after_start_not_one_interval_later() -> None:
    # A new deployment is checked at once (within the probes' start spread), not an hour after the daemon starts.
    from monitor.config.deployment import DoctorSchedule
    from monitor.doctor_jobs import build_doctor_trigger
    from monitor.scheduler import SPREAD_MAX_S

    now = datetime.now(UTC)
    first = build_doctor_trigger(DoctorSchedule(interval_s=3600), "doctor:mock").get_next_fire_time(None, now)
    assert first is not None and now <= first <= now + timedelta(seconds=SPREAD_MAX_S + 1)
