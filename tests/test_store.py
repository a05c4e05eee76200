"""The store on both real backends: every field round-trips, filters work, failures are one-line StoreErrors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from monitor.errors import StoreError
from monitor.loadtest.repo import LoadStore
from monitor.meter import StreamMeasurement
from monitor.results import TEXT_SAMPLE_CHARS, CheckResult, ProbeResult
from monitor.store import Store, censor_url, connect, create_engine, normalize_url, ping, upgrade
from tests.dbs import Backend, temporary_database

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
T0 = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(name="engine", params=BACKENDS)
async def fix_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh, migrated database of each backend."""
    backend: Backend = request.param
    async with temporary_database(backend, tmp_path) as url:
        engine = create_engine(url)
        try:
            await upgrade(engine)
            yield engine
        finally:
            await engine.dispose()


@pytest.fixture(name="store")
def fix_store(engine: AsyncEngine) -> Store:
    return Store(async_sessionmaker(engine, expire_on_commit=False))


def measurement(**overrides: object) -> StreamMeasurement:
    fields: dict[str, object] = {
        "endpoint": "chat",
        "stream": True,
        "text": "你好，世界！",
        "ttft_ms": 81.25,
        "latency_ms": 950.5,
        "itl_ms": (10.0, 20.0, 30.0, 40.0),
        "chunk_count": 7,
        "content_chunk_count": 5,
        "prompt_tokens": 12,
        "completion_tokens": 5,
        "tokens_estimated": False,
        "itl_per_token_exact": True,
        "finish_reason": "stop",
        "stop_reason": 151336,
        "done_seen": True,
        "error_kind": None,
        "error_detail": None,
    }
    fields.update(overrides)
    return StreamMeasurement(**fields)  # type: ignore[arg-type]


def result(probe: str = "chat", target: str = "mock", started_at: datetime = T0, **overrides: object) -> ProbeResult:
    base = ProbeResult(
        probe=probe,
        target=target,
        endpoint="chat",
        stream=True,
        started_at=started_at,
        max_tokens=64,
        http_status=200,
        measurement=measurement(),
        checks=(CheckResult("not_empty", True, ""), CheckResult("no_template_leak", False, "saw <|im_end|>")),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


async def test_every_field_round_trips(store: Store) -> None:
    beijing = timezone(timedelta(hours=8))
    long_text = "长" * (TEXT_SAMPLE_CHARS + 50)
    probe_result = result(
        started_at=T0.astimezone(beijing), measurement=measurement(text=long_text, finish_reason="length")
    )

    (row_id,) = await store.add_results([probe_result])
    (stored,) = await store.recent_results()

    assert stored.id == row_id
    assert stored.started_at == T0 and stored.started_at.tzinfo == UTC
    assert (stored.probe, stored.target, stored.endpoint, stored.stream) == ("chat", "mock", "chat", True)
    assert (stored.ok, stored.error_kind, stored.error_detail, stored.timeout_phase) == (False, None, None, None)
    assert stored.http_status == 200
    assert (stored.ttft_ms, stored.latency_ms) == (81.25, 950.5)
    assert (stored.itl_ms_mean, stored.itl_ms_max) == (25.0, 40.0)
    assert stored.itl_ms_p95 == pytest.approx(38.5)
    assert (stored.chunk_count, stored.prompt_tokens, stored.completion_tokens) == (7, 12, 5)
    assert stored.tokens_estimated is False
    assert (stored.finish_reason, stored.stop_reason) == ("length", "151336")
    assert (stored.max_tokens, stored.truncated) == (64, True)
    assert stored.text_sample == long_text[:TEXT_SAMPLE_CHARS]
    assert stored.checks == probe_result.checks
    assert stored.failed_checks == ("no_template_leak",)
    assert stored.load_run_id is None


async def test_result_without_measurement(store: Store, engine: AsyncEngine) -> None:
    failed = result(
        http_status=None,
        error_kind="connect_error",
        error_detail="x" * 5000,
        measurement=None,
        checks=(),
        elapsed_ms=12.5,
    )

    # probe_results.load_run_id references load_runs (migration 0006), so the run must exist.
    run_id = await LoadStore.from_engine(engine).create_run(
        started_at=T0, target="mock", base_url="http://127.0.0.1:1/v1", model=None, params={}, baseline_id=None
    )
    await store.add_results([failed], load_run_id=run_id)
    (stored,) = await store.recent_results()

    assert (stored.ok, stored.error_kind, stored.http_status) == (False, "connect_error", None)
    assert stored.error_detail == "x" * 2000
    assert stored.latency_ms == 12.5
    assert (stored.ttft_ms, stored.itl_ms_mean, stored.chunk_count, stored.tokens_estimated) == (None,) * 4
    assert (stored.finish_reason, stored.stop_reason, stored.text_sample) == (None, None, None)
    assert (stored.truncated, stored.checks, stored.failed_checks) == (False, (), ())
    assert stored.load_run_id == run_id


async def test_recent_results_filters_newest_first(store: Store) -> None:
    results = [
        result("chat", "a", T0),
        result("chat", "b", T0 + timedelta(seconds=1)),
        result("completion", "a", T0 + timedelta(seconds=2)),
        result("chat", "a", T0 + timedelta(seconds=3)),
    ]
    ids = await store.add_results(results)
    assert len(set(ids)) == 4

    newest_first = await store.recent_results()
    assert [r.id for r in newest_first] == ids[::-1]
    assert [r.id for r in await store.recent_results(probe="chat", target="a")] == [ids[3], ids[0]]
    assert [r.id for r in await store.recent_results(since=T0 + timedelta(seconds=2))] == [ids[3], ids[2]]
    assert [r.id for r in await store.recent_results(limit=1)] == [ids[3]]
    assert await store.count_results() == 4
    assert await store.count_results(target="a", since=T0 + timedelta(seconds=1)) == 2
    assert await store.count_results(probe="nope") == 0


# The `/api/v1/results` form: every column under its name (docs/api.md).
API_FIELDS = {
    "id", "started_at", "probe", "target", "endpoint", "stream", "ok", "error_kind", "error_detail", "timeout_phase",
    "http_status", "ttft_ms", "latency_ms", "itl_ms_mean", "itl_ms_p95", "itl_ms_max", "chunk_count",
    "prompt_tokens", "completion_tokens", "tokens_estimated", "finish_reason", "stop_reason", "max_tokens",
    "truncated", "text_sample", "checks", "failed_checks", "load_run_id", "source", "sanitised",
    "ttfa_ms", "reasoning_tokens", "reasoning_tokens_estimated", "tool_call_count",
    "golden_similarity", "golden_method", "golden_passed", "cost", "cost_currency",
}  # fmt: skip


async def test_every_view_of_a_result_has_one_json_form(store: Store, engine: AsyncEngine) -> None:
    run_id = await LoadStore.from_engine(engine).create_run(
        started_at=T0, target="mock", base_url="http://127.0.0.1:1/v1", model=None, params={}, baseline_id=None
    )
    await store.add_results([result()], load_run_id=run_id)
    (stored,) = await store.recent_results()
    full = stored.to_json()
    assert set(full) == API_FIELDS
    assert full["started_at"] == "2026-11-25T10:00:00.123456+00:00" and full["stop_reason"] == "151336"
    assert full["checks"][1] == {"name": "no_template_leak", "passed": False, "detail": "saw <|im_end|>"}
    assert full["failed_checks"] == ["no_template_leak"] and full["source"] == "daemon"
    # The overview's newest result and a load run's canaries: the same form, cut to their columns.
    last = await store.last_results([("chat", "mock"), ("chat", "nope")])
    assert list(last) == [("chat", "mock")]
    (canary,) = await store.canaries(run_id, limit=10)
    for line in (last[("chat", "mock")], canary):
        assert line.to_json().items() <= full.items()


async def test_reads_for_the_pages_and_retention(store: Store, engine: AsyncEngine) -> None:
    await store.add_results([result(started_at=T0 + timedelta(minutes=m)) for m in range(5)])
    await store.add_results([result(started_at=T0 - timedelta(minutes=1))], source="probe")
    await store.add_results([result(started_at=T0 + timedelta(minutes=9), checks=())], source="doctor")
    assert await store.first_result_at(probe="chat", target="mock", source="daemon") == T0
    assert await store.first_result_at(probe="chat") == T0 - timedelta(minutes=1)
    assert await store.first_result_at(probe="nope") is None
    rows = await store.oneshot_rows(since=T0 - timedelta(hours=1), limit=10)
    assert [(r.source, r.results, r.not_ok, r.last_at) for r in rows] == [
        ("doctor", 1, 0, T0 + timedelta(minutes=9)),
        ("probe", 1, 1, T0 - timedelta(minutes=1)),
    ]
    # Retention deletes in batches of at most `limit`, the oldest first.
    assert await store.delete_results(before=T0 + timedelta(minutes=3), limit=2) == 2
    assert await store.delete_results(before=T0 + timedelta(minutes=3), limit=2) == 2
    assert await store.delete_results(before=T0 + timedelta(minutes=3), limit=2) == 0
    assert await store.first_result_at() == T0 + timedelta(minutes=3)


async def test_add_nothing(store: Store) -> None:
    assert await store.add_results([]) == []


async def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.add_results([result(started_at=T0.replace(tzinfo=None))])
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.recent_results(since=T0.replace(tzinfo=None))


async def test_write_failure_is_a_store_error(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'unmigrated.db'}")
    try:
        with pytest.raises(
            StoreError, match=r"^cannot write 1 probe results in sqlite\+aiosqlite:///.*: no such table"
        ):
            await Store.from_engine(engine).add_results([result()])
    finally:
        await engine.dispose()


async def test_ping_unreachable_postgres_is_one_censored_line() -> None:
    engine = create_engine("postgresql://monitor:hunter2@127.0.0.1:1/monitor")
    try:
        with pytest.raises(StoreError) as excinfo:
            await ping(engine)
    finally:
        await engine.dispose()
    assert (
        str(excinfo.value)
        == "cannot reach database postgresql+asyncpg://monitor:***@127.0.0.1:1/monitor: connection refused"
    )


async def test_connect_retries_then_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    # Retries log at INFO: at the CLI's default level an unreachable database is one error line.
    caplog.set_level(logging.INFO, logger="monitor.store.db")
    with pytest.raises(StoreError, match="connection refused"):
        await connect("postgresql://monitor:hunter2@127.0.0.1:1/monitor", connect_retries=2, retry_delay_s=0.01)
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and retries[1].endswith("retry 2/2 in 0.0 s")
    assert not any("hunter2" in message for message in retries)


async def test_connect_returns_a_working_engine(tmp_path: Path) -> None:
    engine = await connect(f"sqlite:///{tmp_path / 'sub' / 'monitor.db'}")
    try:
        await ping(engine)
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("url", "censored"),
    [
        ("postgresql+asyncpg://u:secret@db:5432/monitor", "postgresql+asyncpg://u:***@db:5432/monitor"),
        ("postgresql://u:p%40ss@db/monitor", "postgresql://u:***@db/monitor"),
        ("postgresql://u@db/monitor", "postgresql://u@db/monitor"),
        ("sqlite:///data/monitor.db", "sqlite:///data/monitor.db"),
        ("not a url://u:secret@x", "not a url://u:***@x"),
    ],
)
def test_censor_url(url: str, censored: str) -> None:
    assert censor_url(url) == censored


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("sqlite:///data/monitor.db", "sqlite+aiosqlite:///data/monitor.db"),
        ("sqlite+aiosqlite:///data/monitor.db", "sqlite+aiosqlite:///data/monitor.db"),
        ("postgresql://u:pw@db/monitor", "postgresql+asyncpg://u:pw@db/monitor"),
        ("postgres://u@db/monitor", "postgresql+asyncpg://u@db/monitor"),
    ],
)
def test_short_urls_get_async_drivers(url: str, normalised: str) -> None:
    assert normalize_url(url).render_as_string(hide_password=False) == normalised


@pytest.mark.parametrize(
    "url", ["foo://x", "mysql://u:secret@db/monitor", "sqlite+pysqlite:///x.db", "postgresql+psycopg2://u@db/m", "nope"]
)
def test_unsupported_urls_are_store_errors(url: str) -> None:
    with pytest.raises(StoreError, match="database URL") as excinfo:
        create_engine(url)
    assert "secret" not in str(excinfo.value)
