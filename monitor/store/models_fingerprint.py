"""The `fingerprints` and `fingerprint_baselines` tables: what identified a deployment, and what was accepted.

One `fingerprints` row per component per run (`status` ok / not_served / error; `value` the
canonical reading, already reduced and capped by monitor.fingerprint.collect; `digest` its SHA-256).
`fingerprint_baselines` holds one accepted value per target and component: the first reading of a
component, or the latest one after `llm-monitor fingerprint accept`. Drift is judged against it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from monitor.store.models import NAME_MAX_CHARS, Base, UTCDateTime

__all__ = ["FINGERPRINT_ERROR_MAX_CHARS", "FingerprintBaselineRow", "FingerprintRow"]

FINGERPRINT_ERROR_MAX_CHARS = 300
_COMPONENT_MAX_CHARS = 40
_STATUS_MAX_CHARS = 20


class FingerprintRow(Base):
    __tablename__ = "fingerprints"
    __table_args__ = (Index("ix_fingerprints_target_taken_at", "target", "taken_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime())
    component: Mapped[str] = mapped_column(String(_COMPONENT_MAX_CHARS))
    status: Mapped[str] = mapped_column(String(_STATUS_MAX_CHARS))
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    digest: Mapped[str] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(String(FINGERPRINT_ERROR_MAX_CHARS))


class FingerprintBaselineRow(Base):
    __tablename__ = "fingerprint_baselines"

    target: Mapped[str] = mapped_column(String(NAME_MAX_CHARS), primary_key=True)
    component: Mapped[str] = mapped_column(String(_COMPONENT_MAX_CHARS), primary_key=True)
    status: Mapped[str] = mapped_column(String(_STATUS_MAX_CHARS))
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    digest: Mapped[str] = mapped_column(String(64))
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    accepted_by: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
