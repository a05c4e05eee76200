"""The scheduled doctor's reports: `doctor_runs` (one per run) and `doctor_findings` (one per check run).

A run that gave no verdicts (the server could not be reached, the daemon stalled) has an `error`
and no findings. `active` records whether the finding was worse than its reference verdict (the
alert condition), so the reference survives a restart: it is the latest non-skip finding of the
check that was not active.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from monitor.store.models import NAME_MAX_CHARS, Base, UTCDateTime

__all__ = [
    "DOCTOR_ERROR_MAX_CHARS", "DOCTOR_FIX_MAX_CHARS", "DOCTOR_TEXT_MAX_CHARS", "DoctorFindingRow", "DoctorRunRow",
]  # fmt: skip

DOCTOR_ERROR_MAX_CHARS = 300
DOCTOR_TEXT_MAX_CHARS = 500  # summary, request, response excerpt
DOCTOR_FIX_MAX_CHARS = 2000


class DoctorRunRow(Base):
    __tablename__ = "doctor_runs"
    __table_args__ = (Index("ix_doctor_runs_target_started_at", "target", "started_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime())
    model: Mapped[str | None] = mapped_column(String(NAME_MAX_CHARS))
    max_model_len: Mapped[int | None] = mapped_column(Integer)
    exit_code: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(DOCTOR_ERROR_MAX_CHARS))


class DoctorFindingRow(Base):
    __tablename__ = "doctor_findings"
    __table_args__ = (Index("ix_doctor_findings_run_id", "run_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("doctor_runs.id", ondelete="CASCADE"))
    check_id: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(8))
    active: Mapped[bool] = mapped_column(Boolean)
    summary: Mapped[str] = mapped_column(String(DOCTOR_TEXT_MAX_CHARS))
    fix: Mapped[str | None] = mapped_column(String(DOCTOR_FIX_MAX_CHARS))
    request: Mapped[str] = mapped_column(String(DOCTOR_TEXT_MAX_CHARS))
    response_excerpt: Mapped[str] = mapped_column(String(DOCTOR_TEXT_MAX_CHARS))
    details: Mapped[list[Any] | None] = mapped_column(JSON)
