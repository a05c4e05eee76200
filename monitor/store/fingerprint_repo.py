"""Queries on `fingerprints` and `fingerprint_baselines`: readings written, baselines kept and accepted.

Reads return `StoredReading`s, never ORM rows; every database failure surfaces as `StoreError`
naming the operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.config.deployment import FINGERPRINT_COMPONENTS
from monitor.store.models_fingerprint import FINGERPRINT_ERROR_MAX_CHARS, FingerprintBaselineRow, FingerprintRow
from monitor.store.repo import delete_chosen, store_session

__all__ = ["FingerprintStore", "StoredReading"]


@dataclass(frozen=True, slots=True)
class StoredReading:
    """One component's value, as recorded (`at` = taken_at) or as accepted (`at` = accepted_at)."""

    target: str
    component: str
    status: str
    value: Any
    digest: str
    at: datetime
    error: str | None = None
    accepted_by: str | None = None  # set on baselines

    def to_json(self) -> dict[str, Any]:
        out = {
            "component": self.component, "status": self.status, "value": self.value, "digest": self.digest,
            "at": self.at.isoformat(), "error": self.error,
        }  # fmt: skip
        if self.accepted_by is not None:
            out["accepted_by"] = self.accepted_by
        return out


class FingerprintStore:
    """Reads and writes fingerprints through a session factory it does not own."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def record(self, target: str, taken_at: datetime, readings: Sequence[tuple[str, str, Any, str, str]]) -> None:
        """Store one run: (component, status, value, digest, error) per component."""
        rows = [
            FingerprintRow(
                target=target,
                taken_at=taken_at,
                component=component,
                status=status,
                value=value,
                digest=digest,
                error=error[:FINGERPRINT_ERROR_MAX_CHARS] or None,
            )  # fmt: skip
            for component, status, value, digest, error in readings
        ]
        async with store_session(self._sessionmaker, "write a fingerprint") as session, session.begin():
            session.add_all(rows)

    async def baselines(self, target: str) -> dict[str, StoredReading]:
        query = select(FingerprintBaselineRow).where(FingerprintBaselineRow.target == target)
        async with store_session(self._sessionmaker, "read fingerprint baselines") as session:
            rows = (await session.execute(query)).scalars().all()
        return {
            r.component: StoredReading(
                r.target, r.component, r.status, r.value, r.digest, r.accepted_at, None, r.accepted_by
            )
            for r in rows
        }

    async def set_baseline(self, reading: StoredReading, *, accepted_at: datetime, accepted_by: str) -> None:
        """Make `reading` the accepted value of its component (replacing the previous one)."""
        async with store_session(self._sessionmaker, "write a fingerprint baseline") as session, session.begin():
            await session.execute(
                delete(FingerprintBaselineRow).where(
                    FingerprintBaselineRow.target == reading.target,
                    FingerprintBaselineRow.component == reading.component,
                )
            )
            session.add(
                FingerprintBaselineRow(
                    target=reading.target,
                    component=reading.component,
                    status=reading.status,
                    value=reading.value,
                    digest=reading.digest,
                    accepted_at=accepted_at,
                    accepted_by=accepted_by,
                )  # fmt: skip
            )

    async def accept_latest(
        self, target: str, components: Sequence[str] | None, *, by: str, now: datetime
    ) -> list[str]:
        """Make the latest reading of `components` (None: every one) the baseline; the components accepted."""
        latest = await self.latest(target)
        chosen = [c for c in FINGERPRINT_COMPONENTS if c in latest and (components is None or c in components)]
        for component in chosen:
            await self.set_baseline(latest[component], accepted_at=now, accepted_by=by)
        return chosen

    async def latest(self, target: str) -> dict[str, StoredReading]:
        """The newest recorded reading of each component of `target` that was read (errors left out)."""
        newest = (
            select(FingerprintRow.component, func.max(FingerprintRow.id).label("id"))
            .where(FingerprintRow.target == target, FingerprintRow.status != "error")
            .group_by(FingerprintRow.component)
            .subquery()
        )
        query = select(FingerprintRow).join(newest, FingerprintRow.id == newest.c.id)
        async with store_session(self._sessionmaker, "read the newest fingerprint") as session:
            rows = (await session.execute(query)).scalars().all()
        return {r.component: _reading(r) for r in rows}

    async def history(self, target: str, *, limit: int = 200) -> list[StoredReading]:
        """The newest `limit` recorded readings of `target`, newest first."""
        query = (
            select(FingerprintRow)
            .where(FingerprintRow.target == target)
            .order_by(FingerprintRow.taken_at.desc(), FingerprintRow.id.desc())
            .limit(limit)
        )
        async with store_session(self._sessionmaker, "read fingerprints") as session:
            rows = (await session.execute(query)).scalars().all()
        return [_reading(r) for r in rows]

    async def delete_before(self, cutoff: datetime, *, limit: int) -> int:
        """Delete up to `limit` recorded readings older than `cutoff` (baselines are kept)."""
        ids = select(FingerprintRow.id).where(FingerprintRow.taken_at < cutoff).order_by(FingerprintRow.id).limit(limit)
        return await delete_chosen(self._sessionmaker, FingerprintRow, ids, "delete old fingerprints")


def _reading(r: FingerprintRow) -> StoredReading:
    return StoredReading(r.target, r.component, r.status, r.value, r.digest, r.taken_at, r.error)
