"""Migrations are code: stairway, drift against the models, automatic upgrade, SQLite pragmas."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.errors import StoreError
from monitor.store import db
from monitor.store.schema import metadata
from tests.dbs import Backend, temporary_database

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _revisions() -> list[Script]:
    script = ScriptDirectory(str(db.migrations_dir()))
    return list(reversed(list(script.walk_revisions("base", "heads"))))


@pytest.fixture(name="database_url", params=BACKENDS)
async def fix_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    backend: Backend = request.param
    async with temporary_database(backend, tmp_path) as url:
        yield url


@pytest.fixture(name="engine")
async def fix_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _tables(engine: AsyncEngine) -> set[str]:
    def read(conn: Connection) -> set[str]:
        return set(inspect(conn).get_table_names())

    async with engine.connect() as conn:
        return await conn.run_sync(read)


def test_revisions_form_one_line_of_numbered_ids() -> None:
    revisions = _revisions()
    assert [r.revision for r in revisions] == [f"{n:04d}" for n in range(1, len(revisions) + 1)]
    assert revisions[0].down_revision is None
    assert db.head_revision() == revisions[-1].revision


@pytest.mark.parametrize("revision", _revisions(), ids=lambda r: r.revision)
async def test_stairway(engine: AsyncEngine, revision: Script) -> None:
    down = revision.down_revision
    assert down is None or isinstance(down, str), "merge revisions need their own stairway step"
    await db.upgrade(engine, revision.revision)
    await db.downgrade(engine, down or "base")
    assert await db.current_revision(engine) == down
    await db.upgrade(engine, revision.revision)
    assert await db.current_revision(engine) == revision.revision


async def test_downgrade_to_base_removes_every_table(engine: AsyncEngine) -> None:
    await db.upgrade(engine)
    assert "probe_results" in await _tables(engine)
    await db.downgrade(engine, "base")
    assert await _tables(engine) <= {"alembic_version"}


async def test_models_match_migrations(engine: AsyncEngine) -> None:
    await db.upgrade(engine)

    def diff(conn: Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_ensure_schema_upgrades_empty_database_once(engine: AsyncEngine) -> None:
    assert await db.current_revision(engine) is None
    await db.ensure_schema(engine)
    assert await db.current_revision(engine) == db.head_revision()
    assert "probe_results" in await _tables(engine)
    await db.ensure_schema(engine)  # already at head: nothing to do


async def test_concurrent_ensure_schema_is_serialised(database_url: str) -> None:
    engines = [db.create_engine(database_url) for _ in range(3)]
    try:
        # A TaskGroup cancels the others if one fails, so no connection outlives the dispose below.
        async with asyncio.TaskGroup() as tasks:
            for engine in engines:
                tasks.create_task(db.ensure_schema(engine))
        assert await db.current_revision(engines[0]) == db.head_revision()
    finally:
        for engine in engines:
            await engine.dispose()


async def test_ensure_schema_refuses_a_newer_database(engine: AsyncEngine) -> None:
    await db.upgrade(engine)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StoreError, match=r"revision 9999, which this llm-monitor does not know"):
        await db.ensure_schema(engine)


async def test_upgrade_by_url_disposes_its_engine(database_url: str) -> None:
    await db.upgrade(database_url)
    engine = db.create_engine(database_url)
    try:
        assert await db.current_revision(engine) == db.head_revision()
    finally:
        await engine.dispose()


def test_upgrade_sync_works_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    db_file = tmp_path / "nested" / "dir" / "monitor.db"
    db.upgrade_sync(f"sqlite:///{db_file}")
    with sqlite3.connect(db_file) as conn:
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == db.head_revision()
    db.downgrade_sync(f"sqlite:///{db_file}", "base")


def test_alembic_config_is_absolute_and_keeps_percent_signs() -> None:
    cfg = db.alembic_config("postgresql://user:p%25ss@db.example/monitor")
    location = cfg.get_main_option("script_location")
    assert location is not None and Path(location).is_absolute() and (Path(location) / "env.py").is_file()
    assert cfg.get_main_option("sqlalchemy.url") == "postgresql+asyncpg://user:p%25ss@db.example/monitor"


async def test_failed_upgrade_is_a_store_error(engine: AsyncEngine) -> None:
    with pytest.raises(StoreError, match=r"^cannot upgrade to nope database .*: .*'nope'"):
        await db.upgrade(engine, "nope")


async def test_sqlite_connections_use_wal_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'new' / 'monitor.db'}")
    try:
        async with engine.connect() as conn:
            pragmas = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
    finally:
        await engine.dispose()
    # synchronous: 1 is NORMAL.
    assert pragmas == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 5000, "foreign_keys": 1}
