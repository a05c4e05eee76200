"""Helpers for tests that need a real database (no fixtures here; conftest and test modules wire them)."""

from __future__ import annotations

import contextlib
import functools
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

Backend = Literal["sqlite", "postgres"]

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
# The database we connect to in order to CREATE/DROP the per-test ones.
PG_ADMIN_DB = "test"


@functools.cache
def pg_available() -> bool:
    """Whether something accepts TCP connections on the PostgreSQL port (checked once, quickly)."""
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=0.5):
            return True
    except OSError:
        return False


async def create_pg_database() -> str:
    """Create an empty, uniquely named database and return its SQLAlchemy URL."""
    name = f"llmmon_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


async def drop_pg_database(url: str) -> None:
    """Drop a database made by `create_pg_database`, even if connections are still open."""
    name = make_url(url).database
    if not name or not name.startswith("llmmon_"):
        raise ValueError(f"refusing to drop {name!r}: not made by create_pg_database")
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file URL inside `tmp_path` (the file itself is created on first connect)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'monitor.db'}"


async def _admin(statement: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction block, hence AUTOCOMMIT.
    engine = create_async_engine(
        f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{PG_ADMIN_DB}",
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def temporary_database(backend: Backend, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database URL on `backend`, removed afterwards (for fixtures that parametrize backends)."""
    if backend == "sqlite":
        yield sqlite_url(tmp_path)
        return
    if not pg_available():
        raise RuntimeError(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT}; deselect with -m 'not postgres'")
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)
