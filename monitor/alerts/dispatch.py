"""The Dispatcher: delivers outbox messages, retrying with exponential backoff and jitter.

- A message is claimed before it is sent (`claimed_until`, set by a conditional UPDATE), so two
  daemon replicas never send the same message at once, and a crashed sender's claim expires.
- Messages of one alert to one receiver go out in the order they were written: a message waits
  while an earlier one of the same alert and receiver is still pending.
- Every attempt is a `delivery_attempts` row. A message is retried until it is older than the
  receiver's `max_age_s` (then it is `failed`), except after a permanent error (a 4xx other than
  408/425/429), which fails it at once. Pending messages survive restarts: they are rows.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from monitor.alerts.model import AlertSnapshot, Notification
from monitor.alerts.webhook import Delivery, build_request, send
from monitor.clock import Clock
from monitor.config import ReceiverSettings
from monitor.store.db import describe_error
from monitor.store.models_alerts import DeliveryAttemptRow, OutboxRow
from monitor.tasks import wait_event

if TYPE_CHECKING:
    from monitor.config import Settings

__all__ = ["Dispatcher", "external_url"]

logger = logging.getLogger(__name__)


def external_url(api_host: str, api_port: int, configured: str | None) -> str:
    """The URL people use to reach the daemon (links in notifications)."""
    if configured:
        return configured.rstrip("/")
    host = "127.0.0.1" if api_host in ("0.0.0.0", "::", "") else api_host
    return f"http://{f'[{host}]' if ':' in host else host}:{api_port}"


@dataclass(frozen=True, slots=True)
class _Claimed:
    """A claimed message, copied out of its session (the caller's sessionmaker may expire on commit)."""

    id: int
    idempotency_key: str
    rule: str
    receiver: str
    status: str
    alert: dict[str, Any]
    created_at: datetime
    attempts: int


class Dispatcher:
    """Sends due outbox messages. It is handed the HTTP session and never closes it."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        session: aiohttp.ClientSession,
        *,
        clock: Clock,
        secrets: Mapping[str, str],
        rng: random.Random | None = None,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 300.0,
        poll_interval_s: float = 5.0,
        batch_size: int = 50,
        concurrency: int = 8,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._http = session
        self._clock = clock
        self._rng = rng or random.Random()
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._poll_interval_s = poll_interval_s
        self._batch_size = batch_size
        self._limit = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self.reload(settings, secrets)

    def reload(self, settings: Settings, secrets: Mapping[str, str] | None = None) -> None:
        """New receivers (SIGHUP). Messages already written keep their receiver name."""
        self._receivers: dict[str, ReceiverSettings] = {r.name: r for r in settings.receivers}
        if secrets is not None:
            self._secrets = dict(secrets)
        self._external_url = external_url(settings.api.host, settings.api.port, settings.api.external_url)
        # A claim outlives the longest send, so an in-flight message is never claimed twice.
        self._claim_s = max([60.0, *(r.timeout_s + 30.0 for r in settings.receivers)])
        for receiver in settings.receivers:
            if receiver.secret_env and receiver.name not in self._secrets:
                logger.warning("receiver %s has secret_env but no secret was resolved: sending unsigned", receiver.name)

    def wake(self) -> None:
        """Look for due messages now (called after new messages were committed)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; never raises (failures are logged and retried)."""
        logger.info("dispatcher started")
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.dispatch_due()
                delay_s = await self._next_due_in_s()
            except (SQLAlchemyError, OSError) as exc:
                # The database is down: the messages are safe in it, so wait and try again.
                logger.error("outbox unavailable (%s); retrying in %.0f s", describe_error(exc), self._poll_interval_s)
                delay_s = self._poll_interval_s
            except Exception:
                logger.exception("outbox dispatch failed; retrying in %.0f s", self._poll_interval_s)
                delay_s = self._poll_interval_s
            # Sleep until the next message is due, new ones are committed (`wake`) or the daemon stops.
            await wait_event(stop, self._wake, timeout_s=delay_s)
        logger.info("dispatcher stopped")

    async def dispatch_due(self) -> int:
        """Send every message that is due now (in order per alert); returns how many were delivered."""
        delivered = 0
        # A delivered message can unblock the next one of its alert, hence a few passes.
        for _ in range(10):
            rows = await self._claim(self._clock.now())
            if not rows:
                break
            outcomes = await asyncio.gather(*(self._deliver(row) for row in rows))
            delivered += sum(outcomes)
        return delivered

    async def _claim(self, now: datetime) -> list[_Claimed]:
        earlier = aliased(OutboxRow)
        blocked = exists().where(
            earlier.fingerprint == OutboxRow.fingerprint,
            earlier.receiver == OutboxRow.receiver,
            earlier.state == "pending",
            earlier.id < OutboxRow.id,
        )
        free = or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now)
        due = (
            select(OutboxRow.id)
            .where(OutboxRow.state == "pending", OutboxRow.next_attempt_at <= now, free, ~blocked)
            .order_by(OutboxRow.id)
            .limit(self._batch_size)
        )
        async with self._sessionmaker() as session, session.begin():
            ids = list((await session.scalars(due)).all())
            if not ids:
                return []
            # Conditional: another replica may have claimed some of them since the SELECT.
            claim = (
                update(OutboxRow)
                .where(OutboxRow.id.in_(ids), OutboxRow.state == "pending", free)
                .values(claimed_until=now + timedelta(seconds=self._claim_s))
                .returning(OutboxRow.id)
                .execution_options(synchronize_session=False)
            )
            claimed = list((await session.scalars(claim)).all())
            if not claimed:
                return []
            rows = await session.scalars(select(OutboxRow).where(OutboxRow.id.in_(claimed)).order_by(OutboxRow.id))
            return [
                _Claimed(r.id, r.idempotency_key, r.rule, r.receiver, r.status, r.alert, r.created_at, r.attempts)
                for r in rows
            ]

    async def _deliver(self, row: _Claimed) -> bool:
        receiver = self._receivers.get(row.receiver)
        if receiver is None:
            logger.warning("dropping notification %d: receiver %s is no longer configured", row.id, row.receiver)
            await self._finish(row.id, state="dropped", error=f"receiver {row.receiver!r} is no longer configured")
            return False
        notification = Notification(
            idempotency_key=row.idempotency_key,
            receiver=row.receiver,
            alert=AlertSnapshot.from_json(row.alert),
            created_at=row.created_at,
            external_url=self._external_url,
        )
        attempted_at = self._clock.now()
        async with self._limit:
            request = build_request(receiver, notification, secret=self._secrets.get(receiver.name), now=attempted_at)
            outcome = await send(self._http, request, fmt=receiver.format, timeout_s=receiver.timeout_s)
        await self._record(row, receiver, attempted_at, outcome)
        return outcome.ok

    async def _record(
        self, row: _Claimed, receiver: ReceiverSettings, attempted_at: datetime, outcome: Delivery
    ) -> None:
        now = self._clock.now()
        attempts = row.attempts + 1
        values: dict[str, object] = {"attempts": attempts, "claimed_until": None, "last_error": outcome.error}
        if outcome.ok:
            values.update(state="delivered", delivered_at=now)
            logger.info("delivered %s notification %d of %s to %s", row.status, row.id, row.rule, receiver.name)
        else:
            age_s = (now - row.created_at).total_seconds()
            if outcome.permanent or age_s >= receiver.max_age_s:
                values["state"] = "failed"
                why = "permanent error" if outcome.permanent else f"older than max_age_s={receiver.max_age_s:g}"
                logger.error(
                    "giving up on notification %d to %s after %d attempts (%s): %s",
                    row.id, receiver.name, attempts, why, outcome.error,
                )  # fmt: skip
            else:
                delay_s = self._backoff_s(attempts)
                # One last attempt right at the age limit rather than none after it.
                deadline = row.created_at + timedelta(seconds=receiver.max_age_s)
                values["next_attempt_at"] = min(now + timedelta(seconds=delay_s), max(deadline, now))
                logger.warning(
                    "notification %d to %s failed (attempt %d, retry in %.1f s): %s",
                    row.id, receiver.name, attempts, delay_s, outcome.error,
                )  # fmt: skip
        async with self._sessionmaker() as session, session.begin():
            session.add(
                DeliveryAttemptRow(
                    message_id=row.id,
                    attempted_at=attempted_at,
                    ok=outcome.ok,
                    http_status=outcome.http_status,
                    duration_ms=outcome.duration_ms,
                    error=outcome.error,
                )
            )
            await session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == row.id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    async def _finish(self, message_id: int, *, state: str, error: str) -> None:
        async with self._sessionmaker() as session, session.begin():
            await session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == message_id)
                .values(state=state, claimed_until=None, last_error=error)
                .execution_options(synchronize_session=False)
            )

    def _backoff_s(self, attempts: int) -> float:
        """Exponential (initial * 2^(n-1), capped), with jitter: a random 50-100 % of it."""
        base = min(self._backoff_max_s, self._backoff_initial_s * 2.0 ** min(attempts - 1, 30))
        return base * self._rng.uniform(0.5, 1.0)

    async def _next_due_in_s(self) -> float:
        now = self._clock.now()
        async with self._sessionmaker() as session:
            earliest = (
                await session.execute(select(func.min(OutboxRow.next_attempt_at)).where(OutboxRow.state == "pending"))
            ).scalar_one_or_none()
        if earliest is None:
            return self._poll_interval_s
        return min(self._poll_interval_s, max(0.05, (earliest - now).total_seconds()))
