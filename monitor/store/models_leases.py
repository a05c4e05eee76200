"""Tables of the high-availability feature: the leadership lease of daemon replicas.

Migration 0005 creates exactly this; tests/test_migrations.py checks that it does not drift.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from monitor.store.models import NAME_MAX_CHARS, Base, UTCDateTime

__all__ = ["LeaseRow"]


class LeaseRow(Base):
    """One named lease (the daemons use "daemon"): who holds it, since when, until when.

    `epoch` grows by one whenever the lease changes hands (or is taken again after it lapsed), so a
    holder renews only the term it won: two replicas configured with the same id cannot share it.
    """

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    epoch: Mapped[int] = mapped_column(BigInteger)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    renewed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Compared with the database's clock (PostgreSQL), so the replicas' own clocks never matter.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
