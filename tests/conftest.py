"""Shared fixtures: a clean environment, the real mock server process, and real databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.config import ProbeSettings, TargetSettings, parse_settings
from monitor.store import connect, ensure_schema
from monitor.target_http import target_session
from tests.dbs import create_pg_database, drop_pg_database, pg_available, sqlite_url
from tests.mockserver import MockProcess


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MONITOR_* variable from the developer's shell leaks into a test (httpx's clean_environ)."""
    import os

    for key in list(os.environ):
        if key.startswith("MONITOR_"):
            monkeypatch.delenv(key)


@pytest.fixture(name="mock_process", scope="session")
def fix_mock_process() -> Iterator[MockProcess]:
    """One real `python -m monitor.mock.server` process for the whole session."""
    proc = MockProcess()
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(name="mock")
def fix_mock(mock_process: MockProcess) -> Iterator[MockProcess]:
    """The shared mock, reset to its startup config before and after each test."""
    mock_process.reset()
    yield mock_process
    mock_process.reset()


@pytest.fixture(name="sqlite_db_url")
def fix_sqlite_db_url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


@pytest.fixture(name="pg_db_url")
def fix_pg_db_url() -> Iterator[str]:
    """A fresh PostgreSQL database per test, dropped afterwards."""
    if not pg_available():
        pytest.fail("PostgreSQL is not reachable at 127.0.0.1:5432 (.ci/run starts it)")
    url = asyncio.run(create_pg_database())
    try:
        yield url
    finally:
        asyncio.run(drop_pg_database(url))


@pytest.fixture(name="db_url", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fix_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Both real backends: a SQLite file and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    yield request.getfixturevalue("pg_db_url")


@pytest.fixture(name="engine")
async def fix_engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated engine on each backend of `db_url` (test modules may override it, e.g. SQLite only)."""
    engine = await connect(db_url)
    try:
        await ensure_schema(engine)
        yield engine
    finally:
        await engine.dispose()


def chat_probe(**kw: Any) -> dict[str, Any]:
    hello = [{"role": "user", "content": "你好"}]
    return {"name": "chat", "target": "mock", "endpoint": "chat", "messages": hello, **kw}


def completion_probe(**kw: Any) -> dict[str, Any]:
    return {"name": "completion", "target": "mock", "endpoint": "completion", "prompt": "你好", **kw}


def one_probe(base_url: str, probe: dict[str, Any], **target: Any) -> tuple[TargetSettings, ProbeSettings]:
    """One target ("mock") at ``base_url`` and one probe on it, validated as the daemon would."""
    settings = parse_settings(
        {"targets": [{"name": "mock", "base_url": base_url, **target}], "probes": [{**probe, "target": "mock"}]}
    )
    return settings.targets[0], settings.probes[0]


@pytest.fixture(name="probe_session")
async def fix_probe_session() -> AsyncIterator[aiohttp.ClientSession]:
    """The daemon's probe session: no pool limit, no session-wide timeout (the prober sets its own)."""
    async with target_session(limit=0) as session:
        yield session


# --- the conformance tier's "Tested against" table ------------------------------------------------
_REAL_OUTCOMES: dict[str, dict[str, str]] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Collect each real-server test's outcome by server, for the table written at the end."""
    report: pytest.TestReport = yield
    params = getattr(getattr(item, "callspec", None), "params", {})
    server = params.get("server") if "test_real_servers.py" in item.nodeid else None
    if server is not None and (report.when == "call" or report.outcome != "passed"):
        test = item.name.split("[", 1)[0].removeprefix("test_")
        if "endpoint" in params:
            test += f" ({params['endpoint']})"
        _REAL_OUTCOMES.setdefault(server, {})[test] = report.outcome
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _REAL_OUTCOMES:
        return
    from tests.realservers.servers import SERVERS, servers_root, tested_against_table

    versions = {}
    for name in _REAL_OUTCOMES:
        try:
            versions[name] = SERVERS[name].version(servers_root())
        except Exception:  # the table is a report; a server that cannot say its version still gets a row
            versions[name] = name
    out = Path(session.config.rootpath) / "build" / "tested-against.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(tested_against_table(_REAL_OUTCOMES, versions), encoding="utf-8")
