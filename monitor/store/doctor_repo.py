"""Queries on `doctor_runs` and `doctor_findings`: the scheduled doctor's reports, written and read back.

Reads return `DoctorRun`s (with their `StoredFinding`s), never ORM rows; every database failure
surfaces as `StoreError` naming the operation. Text is capped here; the caller has already cleaned
it (server text is untrusted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from monitor.store.models_doctor import (
    DOCTOR_ERROR_MAX_CHARS,
    DOCTOR_FIX_MAX_CHARS,
    DOCTOR_TEXT_MAX_CHARS,
    DoctorFindingRow,
    DoctorRunRow,
)
from monitor.store.repo import store_session
from monitor.untrusted import one_line

__all__ = ["DoctorRun", "DoctorStore", "StoredFinding"]


@dataclass(frozen=True, slots=True)
class StoredFinding:
    """One check of one run; `active` = worse than its reference verdict (the doctor alert's condition)."""

    check_id: str
    status: str
    active: bool
    summary: str
    fix: str | None = None
    request: str = ""
    response_excerpt: str = ""
    details: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.check_id, "status": self.status, "worse": self.active, "summary": self.summary,
            "fix": self.fix, "evidence": {"request": self.request, "response_excerpt": self.response_excerpt},
            "details": list(self.details),
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class DoctorRun:
    """One scheduled run: its findings in checklist order, or the error that left none."""

    id: int
    target: str
    started_at: datetime
    finished_at: datetime
    model: str | None
    max_model_len: int | None
    exit_code: int
    error: str | None
    findings: tuple[StoredFinding, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "target": self.target, "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(), "model": self.model, "max_model_len": self.max_model_len,
            "exit_code": self.exit_code, "error": self.error, "checks": [f.to_json() for f in self.findings],
        }  # fmt: skip


def _cap(text: str, max_chars: int = DOCTOR_TEXT_MAX_CHARS) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


class DoctorStore:
    """Reads and writes doctor reports through a session factory it does not own."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    @classmethod
    def from_engine(cls, engine: AsyncEngine) -> DoctorStore:
        return cls(async_sessionmaker(engine, expire_on_commit=False))

    async def add(
        self,
        target: str,
        *,
        started_at: datetime,
        finished_at: datetime,
        model: str | None = None,
        max_model_len: int | None = None,
        exit_code: int,
        error: str | None = None,
        findings: Sequence[StoredFinding] = (),
    ) -> int:
        """Store one run and its findings in one transaction; the run's id."""
        run = DoctorRunRow(
            target=target, started_at=started_at, finished_at=finished_at, model=None if model is None else model[:200],
            max_model_len=max_model_len, exit_code=exit_code,
            error=None if error is None else one_line(error, DOCTOR_ERROR_MAX_CHARS),
        )  # fmt: skip
        async with store_session(self._sessionmaker, "write a doctor report") as session, session.begin():
            session.add(run)
            await session.flush()
            session.add_all(
                DoctorFindingRow(
                    run_id=run.id,
                    check_id=f.check_id,
                    status=f.status,
                    active=f.active,
                    summary=_cap(f.summary),
                    fix=None if f.fix is None else _cap(f.fix, DOCTOR_FIX_MAX_CHARS),
                    request=_cap(f.request),
                    response_excerpt=_cap(f.response_excerpt),
                    details=[_cap(d) for d in f.details[:20]] or None,
                )  # fmt: skip
                for f in findings
            )
        return run.id

    async def references(self, target: str) -> dict[str, str]:
        """Per check: the status of its latest stored finding that was not active and not a skip."""
        latest = (
            select(func.max(DoctorFindingRow.id))
            .join(DoctorRunRow, DoctorRunRow.id == DoctorFindingRow.run_id)
            .where(DoctorRunRow.target == target, DoctorFindingRow.active.is_(False), DoctorFindingRow.status != "skip")
            .group_by(DoctorFindingRow.check_id)
        )
        query = select(DoctorFindingRow.check_id, DoctorFindingRow.status).where(
            DoctorFindingRow.id.in_(latest.scalar_subquery())
        )
        async with store_session(self._sessionmaker, "read doctor references") as session:
            return {check: status for check, status in (await session.execute(query)).all()}

    async def latest(self) -> list[DoctorRun]:
        """The latest run of every target that has one, by target name."""
        newest = select(func.max(DoctorRunRow.id)).group_by(DoctorRunRow.target).scalar_subquery()
        return await self._runs(select(DoctorRunRow).where(DoctorRunRow.id.in_(newest)).order_by(DoctorRunRow.target))

    async def history(self, target: str, *, limit: int = 50) -> list[DoctorRun]:
        """The latest `limit` runs of `target`, newest first."""
        query = (
            select(DoctorRunRow)
            .where(DoctorRunRow.target == target)
            .order_by(DoctorRunRow.started_at.desc(), DoctorRunRow.id.desc())
            .limit(limit)
        )
        return await self._runs(query)

    async def _runs(self, query: Any) -> list[DoctorRun]:
        async with store_session(self._sessionmaker, "read doctor reports") as session:
            runs = (await session.execute(query)).scalars().all()
            ids = [r.id for r in runs]
            rows = (
                (
                    await session.execute(
                        select(DoctorFindingRow).where(DoctorFindingRow.run_id.in_(ids)).order_by(DoctorFindingRow.id)
                    )
                )
                .scalars()
                .all()
                if ids
                else []
            )
        by_run: dict[int, list[StoredFinding]] = {}
        for f in rows:
            by_run.setdefault(f.run_id, []).append(
                StoredFinding(
                    f.check_id,
                    f.status,
                    f.active,
                    f.summary,
                    f.fix,
                    f.request,
                    f.response_excerpt,
                    tuple(f.details or ()),
                )  # fmt: skip
            )
        return [
            DoctorRun(
                r.id,
                r.target,
                r.started_at,
                r.finished_at,
                r.model,
                r.max_model_len,
                r.exit_code,
                r.error,
                tuple(by_run.get(r.id, ())),
            )  # fmt: skip
            for r in runs
        ]

    async def delete_before(self, cutoff: datetime, *, limit: int) -> int:
        """Delete up to `limit` runs started before `cutoff`, with their findings; the runs deleted."""
        ids = select(DoctorRunRow.id).where(DoctorRunRow.started_at < cutoff).order_by(DoctorRunRow.id).limit(limit)
        async with store_session(self._sessionmaker, "delete old doctor reports") as session, session.begin():
            chosen = list((await session.execute(ids)).scalars().all())
            if not chosen:
                return 0
            # SQLite enforces the cascade only with PRAGMA foreign_keys: delete the findings explicitly.
            await session.execute(delete(DoctorFindingRow).where(DoctorFindingRow.run_id.in_(chosen)))
            await session.execute(delete(DoctorRunRow).where(DoctorRunRow.id.in_(chosen)))
        return len(chosen)
