"""Tables of the alerts feature: alert states, silences, the notification outbox and its delivery attempts.

Migration 0002 creates exactly these; tests/test_migrations.py checks that they do not drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from monitor.store.models import NAME_MAX_CHARS, Base, UTCDateTime

__all__ = ["AlertStateRow", "DeliveryAttemptRow", "OutboxRow", "SilenceRow"]

_ID = BigInteger().with_variant(Integer, "sqlite")


class AlertStateRow(Base):
    """One alert instance (a rule applied to one probe), keyed by the fingerprint of its labels."""

    __tablename__ = "alert_states"

    fingerprint: Mapped[str] = mapped_column(String(32), primary_key=True)
    rule: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    annotations: Mapped[dict[str, str]] = mapped_column(JSON)
    # inactive | pending | firing | resolved
    state: Mapped[str] = mapped_column(String(16))
    active_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the condition stopped holding while firing (keep_firing_for counts from here).
    clear_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_value: Mapped[float | None]
    threshold: Mapped[float | None]
    last_eval_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # firing | resolved: what the last notification of this alert said (None: nothing sent this episode).
    notified_status: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SilenceRow(Base):
    """Mutes notifications of alerts whose labels match every matcher, from starts_at until ends_at."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    # {"alertname": "high-ttft", "probe": "chat-hello"}: label -> exact value.
    matchers: Mapped[dict[str, str]] = mapped_column(JSON)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    comment: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Set when expired by hand before ends_at.
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class OutboxRow(Base):
    """One notification for one receiver, written before any attempt to send it."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_outbox_fingerprint_receiver_id", "fingerprint", "receiver", "id"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    fingerprint: Mapped[str] = mapped_column(String(32))
    rule: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    receiver: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    # firing | resolved
    status: Mapped[str] = mapped_column(String(16))
    # The alert as it was when the message was written (monitor.alerts.model.AlertSnapshot.to_json()).
    alert: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # pending | delivered | failed (gave up: too old or a permanent error) | dropped (receiver removed)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int]
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # A dispatcher owns the message until then (so two replicas never send it at the same time).
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)


class DeliveryAttemptRow(Base):
    """One HTTP attempt to deliver an outbox message, successful or not."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("ix_delivery_attempts_message_id", "message_id"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    message_id: Mapped[int] = mapped_column(_ID, ForeignKey("outbox.id", ondelete="CASCADE"))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ok: Mapped[bool]
    http_status: Mapped[int | None]
    duration_ms: Mapped[float]
    error: Mapped[str | None] = mapped_column(Text)
