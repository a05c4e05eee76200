"""The durable outbox: a notification is a row before it is a request.

The alert engine adds rows in the same transaction as the state change that caused them, so a
crash can lose neither; the Dispatcher (dispatch.py) delivers them. Each row's idempotency key is
fixed when it is written and sent with every attempt.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.alerts.model import AlertSnapshot, iso
from monitor.store.models_alerts import OutboxRow

__all__ = ["Outbox", "OutboxMessage", "idempotency_key"]

logger = logging.getLogger(__name__)


def idempotency_key(alert: AlertSnapshot, receiver: str, created_at: datetime) -> str:
    """Deterministic per (alert, status, moment, receiver): a second writer of the same event collides."""
    raw = f"{alert.fingerprint}|{alert.status}|{iso(created_at)}|{receiver}"
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A row of the outbox, detached from the session."""

    id: int
    idempotency_key: str
    fingerprint: str
    rule: str
    receiver: str
    status: str
    alert: AlertSnapshot
    created_at: datetime
    state: str
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    last_error: str | None


def _to_message(row: OutboxRow) -> OutboxMessage:
    return OutboxMessage(
        id=row.id,
        idempotency_key=row.idempotency_key,
        fingerprint=row.fingerprint,
        rule=row.rule,
        receiver=row.receiver,
        status=row.status,
        alert=AlertSnapshot.from_json(row.alert),
        created_at=row.created_at,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        delivered_at=row.delivered_at,
        last_error=row.last_error,
    )


class Outbox:
    """Writes notifications (inside the caller's transaction) and reports on them."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._wakers: list[Callable[[], None]] = []

    def add_waker(self, callback: Callable[[], None]) -> None:
        """Call `callback` after new messages were committed (the daemon passes `Dispatcher.wake`)."""
        self._wakers.append(callback)

    def notify_committed(self) -> None:
        for callback in self._wakers:
            callback()

    async def enqueue(
        self, session: AsyncSession, alert: AlertSnapshot, receivers: Sequence[str], *, now: datetime
    ) -> int:
        """Add one pending message per receiver to `session`'s transaction; returns how many."""
        rows = [
            OutboxRow(
                idempotency_key=idempotency_key(alert, receiver, now),
                fingerprint=alert.fingerprint,
                rule=alert.name,
                receiver=receiver,
                status=alert.status,
                alert=alert.to_json(),
                created_at=now,
                state="pending",
                attempts=0,
                next_attempt_at=now,
                claimed_until=None,
                delivered_at=None,
                last_error=None,
            )
            for receiver in receivers
        ]
        session.add_all(rows)
        await session.flush()
        for row in rows:
            logger.info("queued %s notification %d of %s for %s", row.status, row.id, row.rule, row.receiver)
        return len(rows)

    async def depth(self) -> int:
        """How many messages wait for delivery."""
        async with self._sessionmaker() as session:
            query = select(func.count()).select_from(OutboxRow).where(OutboxRow.state == "pending")
            return int((await session.execute(query)).scalar_one())

    async def messages(self, *, state: str | None = None, limit: int = 1000) -> list[OutboxMessage]:
        """Messages in write order (oldest first), optionally in one state."""
        query = select(OutboxRow).order_by(OutboxRow.id).limit(limit)
        if state is not None:
            query = query.where(OutboxRow.state == state)
        async with self._sessionmaker() as session:
            return [_to_message(row) for row in (await session.scalars(query)).all()]

    async def purge(self, *, older_than: datetime) -> int:
        """Delete finished (not pending) messages written before `older_than`, with their attempts."""
        async with self._sessionmaker() as session, session.begin():
            result = await session.execute(
                delete(OutboxRow).where(OutboxRow.state != "pending", OutboxRow.created_at < older_than)
            )
        return int(getattr(result, "rowcount", 0) or 0)
