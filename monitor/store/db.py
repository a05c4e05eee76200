"""Engine factory, connectivity check and schema migrations (Alembic, configured in code).

Accepted URLs: `sqlite+aiosqlite:///PATH` and `postgresql+asyncpg://USER:PASS@HOST/DB`. The short
forms `sqlite:///PATH`, `postgresql://...` and `postgres://...` are rewritten to those drivers.
Every failure here surfaces as `StoreError`, whose message names the censored URL.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import Pool

from monitor.errors import StoreError

__all__ = [
    "alembic_config",
    "censor_url",
    "connect",
    "create_engine",
    "current_revision",
    "describe_error",
    "downgrade",
    "downgrade_sync",
    "ensure_schema",
    "head_revision",
    "make_revision",
    "migrations_dir",
    "normalize_url",
    "ping",
    "upsert_statement",
    "upgrade",
    "upgrade_sync",
    "with_database",
]

_T = TypeVar("_T")

logger = logging.getLogger(__name__)

_SHORT_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
_SUPPORTED_DRIVERS = frozenset(_SHORT_DRIVERS.values())
# Revision files sort by date: 20261125_0001_probe_results.py ("%%" survives ConfigParser interpolation).
FILE_TEMPLATE = "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s"
# Any fixed number works: every llm-monitor process takes the same advisory lock before migrating.
_MIGRATION_LOCK_KEY = 0x6C6C6D6F6E  # "llmon"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def normalize_url(url: str | URL) -> URL:
    """Parse `url` and pick the async driver; raise ValueError naming the (censored) URL if unsupported."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            f"invalid database URL {censor_url(url)!r}: expected sqlite:///PATH or postgresql://..."
        ) from None
    if parsed.drivername in _SHORT_DRIVERS:
        parsed = parsed.set(drivername=_SHORT_DRIVERS[parsed.drivername])
    if parsed.drivername not in _SUPPORTED_DRIVERS:
        raise ValueError(
            f"unsupported database URL {censor_url(parsed)!r}: use sqlite:///PATH or postgresql://USER@HOST/DB "
            f"(drivers: {', '.join(sorted(_SUPPORTED_DRIVERS))})"
        )
    return parsed


def censor_url(url: str | URL) -> str:
    """Render `url` with its password replaced by `***` (also for strings SQLAlchemy cannot parse)."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def create_engine(url: str | URL, *, echo: bool = False, poolclass: type[Pool] | None = None) -> AsyncEngine:
    """Build an AsyncEngine; the caller owns it and must `await engine.dispose()`.

    SQLite gets WAL, `synchronous=NORMAL`, a 5 s busy timeout and foreign keys on every connection,
    and the directory of its file is created. PostgreSQL connections are pinged before reuse.
    """
    try:
        parsed = normalize_url(url)
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    kwargs: dict[str, Any] = {"echo": echo}
    if poolclass is not None:
        kwargs["poolclass"] = poolclass
    if parsed.get_backend_name() == "postgresql":
        kwargs["pool_pre_ping"] = True
    else:
        _make_parent_dir(parsed)
    try:
        engine = create_async_engine(parsed, **kwargs)
    except ImportError as exc:
        raise StoreError(f"database URL {censor_url(parsed)}: driver package {exc.name!r} is not installed") from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"database URL {censor_url(parsed)}: {describe_error(exc)}") from exc
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
    return engine


def _make_parent_dir(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    directory = Path(database).parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"database URL {censor_url(url)}: cannot create directory {directory}: {exc.strerror}"
        ) from exc


def _set_sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in ("busy_timeout=5000", "synchronous=NORMAL", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        # WAL lets the API read while the scheduler writes (and makes NORMAL durable enough). The mode
        # is stored in the file, so only the first connection switches; SQLite fails that switch at
        # once, without the busy timeout, while another connection is making the same switch.
        cursor.execute("PRAGMA journal_mode")
        if cursor.fetchone()[0] != "wal":
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as exc:
                logger.debug("could not switch SQLite to WAL (%s); another connection is doing it", exc)
    finally:
        cursor.close()


def describe_error(exc: BaseException) -> str:
    """A one-line cause for a database error (no SQL, no traceback, no driver class noise)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    message = str(exc).strip()
    # SQLAlchemy's asyncpg adapter prefixes messages with "<class 'asyncpg.exceptions.X'>: ".
    message = re.sub(r"^<class '[\w.]+'>: ", "", message)
    return message.splitlines()[0] if message else type(exc).__name__


async def ping(engine: AsyncEngine, *, timeout_s: float = 10.0) -> None:
    """Run `SELECT 1`; raise StoreError with a one-line message if the database cannot be reached."""
    where = censor_url(engine.url)
    try:
        async with asyncio.timeout(timeout_s), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except TimeoutError:
        raise StoreError(f"cannot reach database {where}: no answer within {timeout_s:g} s") from None
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"cannot reach database {where}: {describe_error(exc)}") from exc


async def connect(
    url: str | URL,
    *,
    echo: bool = False,
    connect_retries: int = 3,
    retry_delay_s: float = 1.0,
    timeout_s: float = 10.0,
) -> AsyncEngine:
    """Create an engine and prove it works, retrying `connect_retries` times; the caller owns the engine."""
    engine = create_engine(url, echo=echo)
    try:
        for attempt in range(1, connect_retries + 2):
            try:
                await ping(engine, timeout_s=timeout_s)
                break
            except StoreError as exc:
                if attempt > connect_retries:
                    raise
                logger.info("%s; retry %d/%d in %.1f s", exc, attempt, connect_retries, retry_delay_s)
                await asyncio.sleep(retry_delay_s)
    except BaseException:
        await engine.dispose()
        raise
    logger.info("connected to database %s", censor_url(engine.url))
    return engine


# --- migrations ---------------------------------------------------------------------------------


def migrations_dir() -> Path:
    """The Alembic script directory: `monitor/_migrations` in a wheel, `migrations/` in a checkout."""
    candidates = (_PACKAGE_DIR / "_migrations", _PACKAGE_DIR.parent / "migrations")
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    raise StoreError(f"migration scripts not found in {' or '.join(str(c) for c in candidates)}")


def alembic_config(url: str | URL) -> Config:
    """An Alembic Config built in code (absolute paths, URL from the caller), usable from any directory."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("file_template", FILE_TEMPLATE)
    # ConfigParser interpolates "%", which percent-encoded passwords contain.
    rendered = normalize_url(url).render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision this version of llm-monitor knows."""
    head = ScriptDirectory(str(migrations_dir())).get_current_head()
    if head is None:
        raise StoreError(f"no migrations found in {migrations_dir()}")
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None for an empty database)."""

    def read(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    try:
        async with engine.connect() as conn:
            return await conn.run_sync(read)
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"cannot read schema revision of {censor_url(engine.url)}: {describe_error(exc)}") from exc


async def upgrade(engine_or_url: AsyncEngine | str, revision: str = "head") -> None:
    """Apply migrations up to `revision` in one transaction (on SQLite, DDL commits as it goes)."""
    await _run_alembic(engine_or_url, f"upgrade to {revision}", lambda cfg: command.upgrade(cfg, revision))


async def downgrade(engine_or_url: AsyncEngine | str, revision: str) -> None:
    """Revert migrations down to `revision` ("-1", "base", or a revision id)."""
    await _run_alembic(engine_or_url, f"downgrade to {revision}", lambda cfg: command.downgrade(cfg, revision))


def upgrade_sync(url: str, revision: str = "head") -> None:
    """`upgrade` for synchronous callers (the CLI); must not be called from a running event loop."""
    asyncio.run(upgrade(url, revision))


def downgrade_sync(url: str, revision: str) -> None:
    """`downgrade` for synchronous callers (the CLI); must not be called from a running event loop."""
    asyncio.run(downgrade(url, revision))


async def ensure_schema(engine: AsyncEngine) -> None:
    """Bring an empty or older database to head; refuse one newer than this code."""
    head = head_revision()
    current = await current_revision(engine)
    if current == head:
        return
    if current is not None and not _is_known(current):
        raise StoreError(
            f"database {censor_url(engine.url)} is at schema revision {current}, which this llm-monitor "
            f"does not know (newest known: {head}); upgrade llm-monitor"
        )
    logger.info("upgrading database %s from %s to %s", censor_url(engine.url), current or "empty", head)
    await upgrade(engine, head)


def make_revision(url: str, message: str, *, autogenerate: bool = True) -> Path:
    """Write a new revision file `migrations/versions/YYYYMMDD_NNNN_slug.py` (for developers).

    With `autogenerate`, the database at `url` must be at head; it is compared with the models.
    """
    script = ScriptDirectory(str(migrations_dir()))
    rev_id = f"{sum(1 for _ in script.walk_revisions()) + 1:04d}"
    result = command.revision(alembic_config(url), message=message, autogenerate=autogenerate, rev_id=rev_id)
    if result is None or isinstance(result, list):
        raise StoreError(f"alembic did not write exactly one revision for {message!r}")
    return Path(result.path)


def _is_known(revision: str) -> bool:
    try:
        ScriptDirectory(str(migrations_dir())).get_revision(revision)
    except CommandError:
        return False
    return True


async def _run_alembic(engine_or_url: AsyncEngine | str, what: str, run: Callable[[Config], None]) -> None:
    if isinstance(engine_or_url, str):
        engine = create_engine(engine_or_url)
        try:
            await _run_alembic(engine, what, run)
        finally:
            await engine.dispose()
        return

    engine = engine_or_url
    cfg = alembic_config(engine.url)

    def in_transaction(conn: Connection) -> None:
        # Serialise concurrent upgrades (daemon and `probe` starting together) and make the DDL
        # transactional. pysqlite would not BEGIN before DDL by itself, so SQLite gets an explicit one.
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        # migrations/env.py reuses this connection instead of opening its own.
        cfg.attributes["connection"] = conn
        run(cfg)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(in_transaction)
    except (CommandError, SQLAlchemyError, OSError) as exc:
        raise StoreError(f"cannot {what} database {censor_url(engine.url)}: {describe_error(exc)}") from exc


def upsert_statement(dialect: str, table: Any) -> Any:
    """INSERT ... ON CONFLICT (primary key) DO UPDATE into the mapped `table`, for executemany (rollup upserts)."""
    # Both backends spell the upsert the same way, but SQLAlchemy builds it from dialect-specific inserts.
    insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    keys = [c.name for c in table.__table__.primary_key.columns]
    updates = {c.name: insert.excluded[c.name] for c in table.__table__.columns if c.name not in keys}
    return insert.on_conflict_do_update(index_elements=keys, set_=updates)


@asynccontextmanager
async def _database(url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = await connect(url, connect_retries=0)
    try:
        await ensure_schema(engine)
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


def with_database(url: str, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[_T]]) -> _T:
    """Run `work` once against the database at `url` (migrated if empty), for one-shot CLI commands."""

    async def main() -> _T:
        async with _database(url) as sessionmaker:
            return await work(sessionmaker)

    return asyncio.run(main())
