"""Which daemon replica leads: a lease row on PostgreSQL, an exclusive file lock on SQLite.

Only the leader probes, evaluates alert rules, runs rollups and retention, and sends notifications;
every replica serves the API. On PostgreSQL the replicas share one row of the `leases` table:

- The holder renews it every `ttl_s / 3`. Expiry is `database now + ttl_s`, and every expiry test
  uses the database's clock, so the replicas' own clocks never need to agree.
- A follower takes the row over only once it has expired (a conditional UPDATE; the winner bumps
  `epoch`). A holder renews only its own epoch, so a lapsed holder can never renew a term it lost.
- A holder that could not renew stops leading at `renew start + ttl_s - ttl_s / 3` by its own
  monotonic clock, which is before the row can expire for anyone else (the database read its
  clock after that start). `is_leader` is computed from that deadline when asked, so work that
  checks it stops on time even if the renewal task is late.

A holder killed with -9 is therefore replaced at most `ttl_s` after its last renewal (followers
wake when the row expires). A holder that shuts down cleanly releases the row at once.

On SQLite one daemon per database file is the rule: `DaemonLock` holds an exclusive `flock` on
`<database>.lock` for the daemon's life, and `SoleLeader` says "always the leader".
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from sqlalchemy import Table, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from monitor.clock import Clock
from monitor.errors import StoreError
from monitor.store.db import describe_error, normalize_url
from monitor.store.models_leases import LeaseRow
from monitor.tasks import wait_event

__all__ = [
    "LEASE_NAME",
    "AlreadyRunning",
    "DaemonLock",
    "LeaderElection",
    "Leadership",
    "LeaseState",
    "LeaseStore",
    "Role",
    "SoleLeader",
    "default_replica_id",
    "sqlite_database",
]

logger = logging.getLogger(__name__)

LEASE_NAME = "daemon"
Role = Literal["leader", "follower"]
# Never poll faster than this, whatever the lease says (a lease about to expire, a tiny TTL).
MIN_WAIT_S = 0.02
_LEASES: Table = LeaseRow.__table__  # type: ignore[assignment]


def default_replica_id() -> str:
    """`hostname:pid:xxxx`; the random part tells apart restarts that reuse a pid (pid 1 in containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


@dataclass(frozen=True, slots=True)
class LeaseState:
    """The lease as one attempt left it. `now` and `expires_at` are on the same (database) clock."""

    holder: str
    epoch: int
    expires_at: datetime
    now: datetime
    held: bool

    @property
    def valid(self) -> bool:
        return self.expires_at > self.now


class LeaseStore:
    """Queries on the `leases` table. `clock=None` means the database's clock (the system clock on SQLite)."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], *, clock: Clock | None = None, name: str = LEASE_NAME
    ) -> None:
        self._sessionmaker = sessionmaker
        self._clock = clock
        self.name = name

    async def _now(self, conn: AsyncConnection) -> datetime:
        if self._clock is not None:
            return self._clock.now()
        if conn.dialect.name == "postgresql":
            # clock_timestamp(), not now(): the latter is the transaction's start, which a lock wait makes stale.
            value = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
            assert isinstance(value, datetime)
            return value.astimezone(UTC)
        # SQLite is one file on one machine: its daemons share the system clock.
        return datetime.now(UTC)

    async def acquire(self, holder: str, ttl_s: float, *, epoch: int | None = None) -> LeaseState:
        """Renew term `epoch` of `holder`, or take the lease if it expired (or never existed).

        Returns the lease after the attempt; `held` says whether `holder` has it until `expires_at`.
        """
        async with self._sessionmaker() as session, session.begin():
            conn = await session.connection()
            now = await self._now(conn)
            expires = now + timedelta(seconds=ttl_s)
            mine = _LEASES.c.name == self.name
            if epoch is not None:
                renew = (
                    update(_LEASES)
                    .where(mine, _LEASES.c.holder == holder, _LEASES.c.epoch == epoch)
                    .values(renewed_at=now, expires_at=expires)
                )
                if (await conn.execute(renew)).rowcount == 1:
                    return LeaseState(holder, epoch, expires, now, held=True)
            # Two followers may race here: the row lock serialises them, and the loser's WHERE no
            # longer matches the winner's fresh expiry.
            take = (
                update(_LEASES)
                .where(mine, _LEASES.c.expires_at <= now)
                .values(holder=holder, epoch=_LEASES.c.epoch + 1, acquired_at=now, renewed_at=now, expires_at=expires)
            )
            if (await conn.execute(take)).rowcount == 1:
                won = int((await conn.execute(select(_LEASES.c.epoch).where(mine))).scalar_one())
                return LeaseState(holder, won, expires, now, held=True)
            row = (await conn.execute(select(_LEASES).where(mine))).one_or_none()
            if row is None:
                values = {
                    "name": self.name, "holder": holder, "epoch": 1, "acquired_at": now, "renewed_at": now,
                    "expires_at": expires,
                }  # fmt: skip
                if (await conn.execute(_insert_if_absent(conn, values))).rowcount == 1:
                    return LeaseState(holder, 1, expires, now, held=True)
                row = (await conn.execute(select(_LEASES).where(mine))).one()
            return LeaseState(row.holder, int(row.epoch), row.expires_at, now, held=False)

    async def release(self, holder: str, epoch: int) -> bool:
        """Expire term `epoch` of `holder` now, so a follower need not wait; False if it was not held."""
        async with self._sessionmaker() as session, session.begin():
            conn = await session.connection()
            now = await self._now(conn)
            release = (
                update(_LEASES)
                .where(_LEASES.c.name == self.name, _LEASES.c.holder == holder, _LEASES.c.epoch == epoch)
                .values(expires_at=now)
            )
            return bool((await conn.execute(release)).rowcount == 1)

    async def current(self) -> LeaseState | None:
        """The lease as stored (`held` is always False: this is an observer's view)."""
        async with self._sessionmaker() as session:
            conn = await session.connection()
            now = await self._now(conn)
            row = (await conn.execute(select(_LEASES).where(_LEASES.c.name == self.name))).one_or_none()
        if row is None:
            return None
        return LeaseState(row.holder, int(row.epoch), row.expires_at, now, held=False)


def _insert_if_absent(conn: AsyncConnection, values: dict[str, Any]) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(_LEASES).values(**values).on_conflict_do_nothing(index_elements=["name"])


class Leadership(Protocol):
    """What the daemon and the API need to know about leadership."""

    @property
    def replica_id(self) -> str: ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def leader(self) -> str | None: ...

    @property
    def transitions(self) -> int: ...

    @property
    def changed(self) -> asyncio.Event: ...

    async def attempt(self) -> float: ...

    async def run(self, stop: asyncio.Event, *, first_wait_s: float = 0.0) -> None: ...

    async def release(self) -> None: ...


class LeaderElection:
    """Keeps trying to hold the lease; `changed` is set whenever `is_leader` flips.

    `monotonic` measures this replica's own deadline (tests pass a hand-moved clock); the lease row
    is stamped by the store's clock.
    """

    def __init__(
        self,
        store: LeaseStore,
        *,
        replica_id: str,
        ttl_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ttl_s > 0:
            raise ValueError("ttl_s must be > 0")
        self._store = store
        self._replica_id = replica_id
        self.ttl_s = ttl_s
        self.renew_interval_s = ttl_s / 3
        # A holder stops this long before its lease can expire: time to cancel what it was doing.
        self.margin_s = ttl_s / 3
        self._monotonic = monotonic
        self._epoch: int | None = None
        self._deadline = -math.inf
        self._holder: str | None = None
        self._announced = False
        self._failing = False
        self._timer: asyncio.TimerHandle | None = None
        self._transitions = 0
        self._changed = asyncio.Event()

    @property
    def replica_id(self) -> str:
        return self._replica_id

    @property
    def is_leader(self) -> bool:
        return self._epoch is not None and self._monotonic() < self._deadline

    @property
    def role(self) -> Role:
        return "leader" if self.is_leader else "follower"

    @property
    def epoch(self) -> int | None:
        """The term this replica won, while it leads."""
        return self._epoch if self.is_leader else None

    @property
    def leader(self) -> str | None:
        """The replica that leads, as last seen (None: nobody, or not known right now)."""
        if self.is_leader:
            return self._replica_id
        return None if self._holder == self._replica_id else self._holder

    @property
    def transitions(self) -> int:
        return self._transitions

    @property
    def changed(self) -> asyncio.Event:
        return self._changed

    async def attempt(self) -> float:
        """One round: renew (leader) or try to take over (follower). Returns seconds until the next round."""
        started = self._monotonic()
        try:
            async with asyncio.timeout(self._attempt_timeout_s(started)):
                state = await self._store.acquire(self._replica_id, self.ttl_s, epoch=self._epoch)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            self._failed(exc)
            self._announce()
            if self.is_leader:
                return max(MIN_WAIT_S, min(self.ttl_s / 10, self._deadline - self._monotonic()))
            return self.renew_interval_s
        if self._failing:
            logger.info("lease: the database answers again")
            self._failing = False
        if state.held:
            self._epoch = state.epoch
            self._deadline = started + self.ttl_s - self.margin_s
            self._arm_timer()
        else:
            self._epoch = None
            self._deadline = -math.inf
        self._holder = state.holder if state.valid else None
        self._announce()
        if state.held:
            return max(MIN_WAIT_S, self.renew_interval_s - (self._monotonic() - started))
        # Wake when the lease expires (a dead leader's never gets renewed), but poll at least every third of it.
        expires_in_s = (state.expires_at - state.now).total_seconds()
        return min(self.renew_interval_s, max(MIN_WAIT_S, expires_in_s))

    async def run(self, stop: asyncio.Event, *, first_wait_s: float = 0.0) -> None:
        """Attempt rounds until `stop` is set (then `release()` hands the lease over).

        `first_wait_s`: the delay an `attempt()` made before the loop returned.
        """
        delay_s = first_wait_s
        while not await wait_event(stop, timeout_s=delay_s):
            delay_s = await self.attempt()

    async def release(self) -> None:
        """Stop leading and expire the lease now, so a follower takes over without waiting for it."""
        epoch, self._epoch = self._epoch, None
        self._deadline = -math.inf
        self._holder = None
        self._announce()
        if epoch is None:
            return
        try:
            async with asyncio.timeout(max(1.0, self.renew_interval_s)):
                released = await self._store.release(self._replica_id, epoch)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            logger.warning(
                "lease: could not release it (%s); a follower takes over within %.0f s", _why(exc), self.ttl_s
            )
            return
        if released:
            logger.info("lease: released by %s", self._replica_id)

    def _attempt_timeout_s(self, now: float) -> float:
        # A leader's attempt must not outlast its deadline: the loop has to be awake to step down.
        if self._epoch is not None and self._deadline > now:
            return max(MIN_WAIT_S, min(self.renew_interval_s, self._deadline - now))
        return self.renew_interval_s

    def _failed(self, exc: BaseException) -> None:
        level = logging.DEBUG if self._failing else logging.WARNING
        logger.log(level, "lease: cannot reach the database (%s); %s", _why(exc), self._consequence())
        self._failing = True

    def _consequence(self) -> str:
        if self.is_leader:
            return f"still leading for {self._deadline - self._monotonic():.1f} s unless a renewal succeeds"
        return "staying a follower"

    def _arm_timer(self) -> None:
        # Step down exactly at the deadline even if the renewal task is stuck somewhere.
        if self._timer is not None:
            self._timer.cancel()
        delay_s = self._deadline - self._monotonic()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, delay_s) + 0.001, self._announce)

    def _announce(self) -> None:
        leading = self.is_leader
        if leading == self._announced:
            return
        self._announced = leading
        self._transitions += 1
        if leading:
            logger.info("leadership: %s leads (term %s)", self._replica_id, self._epoch)
        else:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            logger.warning("leadership: %s stepped down (now following %s)", self._replica_id, self.leader or "nobody")
        self._changed.set()


class SoleLeader:
    """Leadership where only one daemon can run at all (SQLite, under `DaemonLock`)."""

    def __init__(self, replica_id: str) -> None:
        self._replica_id = replica_id
        self._changed = asyncio.Event()
        self._changed.set()

    @property
    def replica_id(self) -> str:
        return self._replica_id

    @property
    def is_leader(self) -> bool:
        return True

    @property
    def leader(self) -> str | None:
        return self._replica_id

    @property
    def transitions(self) -> int:
        return 1

    @property
    def changed(self) -> asyncio.Event:
        return self._changed

    async def attempt(self) -> float:
        return 3600.0

    async def run(self, stop: asyncio.Event, *, first_wait_s: float = 0.0) -> None:
        await stop.wait()

    async def release(self) -> None:
        return None


# --- one daemon per SQLite file ---------------------------------------------------------------------


class AlreadyRunning(StoreError):
    """Another daemon holds the database file."""


def sqlite_database(url: str) -> Path | None:
    """The absolute path of a SQLite database file, or None (PostgreSQL, in-memory, `file:` URIs)."""
    try:
        parsed = normalize_url(url)
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).resolve()


class DaemonLock:
    """An exclusive `flock` on `<database>.lock`, held for the daemon's life; the file keeps the holder's pid.

    The kernel drops the lock when the process dies, however it dies, so a file left by `kill -9`
    never blocks. A clean stop removes the file (while still holding the lock), so nobody finds a
    stale-looking lock next to their database. One-shot commands (`probe`, `doctor`, `alerts`) do not
    take it.
    """

    # A contender that locked a file the holder had just removed tries the new file; twice is plenty.
    ACQUIRE_ATTEMPTS = 3

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        for _ in range(self.ACQUIRE_ATTEMPTS):
            fd = self._open_and_lock()
            if self._still_linked(fd):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self._fd = fd
                logger.debug("locked %s", self.path)
                return
            os.close(fd)
        raise StoreError(f"cannot lock {self.path}: it keeps being removed and recreated")

    def _open_and_lock(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create lock file {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunning(f"another llm-monitor daemon (pid {pid}) is using {self.database}") from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
        return fd

    def _still_linked(self, fd: int) -> bool:
        """Whether the locked file is still the one at `path` (a releasing holder may have unlinked it)."""
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # Unlinked before unlocking: a daemon that opened the file meanwhile sees it gone and retries.
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:  # e.g. a read-only directory: an emptied file is harmless
            logger.debug("could not remove %s: %s", self.path, exc)
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_pid(fd: int) -> str:
    raw = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    return raw if raw.isdigit() else "unknown"


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return describe_error(exc)
