"""The durable outbox: a notification is a row before it is a request.

The alert engine adds rows in the same transaction as the state change that caused them, so a
crash can lose neither; the Dispatcher (dispatch.py) delivers them. Each row's idempotency key is
fixed when it is written and sent with every attempt.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import delete, func, select, update
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
    # Every field but the alert is the column of the same name; the alert is stored as JSON.
    columns = {f.name: getattr(row, f.name) for f in fields(OutboxMessage) if f.name != "alert"}
    return OutboxMessage(**columns, alert=AlertSnapshot.from_json(row.alert))


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

    async def free_claims(self) -> int:
        """Clear the claims on pending messages (a new leader's first step); returns how many.

        Only a leader sends, and a leader stops before its lease can expire; this runs only after
        this replica won the lease, so no other dispatcher can be sending now. Without it, a message
        claimed by a leader killed mid-send would wait for its claim to run out (a minute or more).
        """
        async with self._sessionmaker() as session, session.begin():
            result = await session.execute(
                update(OutboxRow)
                .where(OutboxRow.state == "pending", OutboxRow.claimed_until.is_not(None))
                .values(claimed_until=None)
                .execution_options(synchronize_session=False)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def purge(self, *, older_than: datetime) -> int:
        """Delete finished (not pending) messages written before `older_than`, with their attempts."""
        async with self._sessionmaker() as session, session.begin():
            result = await session.execute(
                delete(OutboxRow).where(OutboxRow.state != "pending", OutboxRow.created_at < older_than)
            )
        return int(getattr(result, "rowcount", 0) or 0)
