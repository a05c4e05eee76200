"""Queries on the alert tables: alert states and silences (the outbox has its own module)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from monitor.alerts.model import AlertView, SilenceView
from monitor.alerts.muting import mute_reason, normalize_matchers
from monitor.alerts.state import AlertRecord
from monitor.config import MaintenanceWindow
from monitor.errors import StoreError
from monitor.store.db import describe_error
from monitor.store.models_alerts import AlertStateRow, SilenceRow

__all__ = [
    "add_silence",
    "alert_views",
    "delete_record",
    "expire_silence",
    "list_silences",
    "load_records",
    "save_record",
    "store_errors",
]

_STATE_ORDER = {"firing": 0, "pending": 1, "resolved": 2, "inactive": 3}
_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@contextmanager
def store_errors(operation: str) -> Iterator[None]:
    """Turn database failures into a one-line StoreError naming the operation."""
    try:
        yield
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"cannot {operation}: {describe_error(exc)}") from exc


# --- alert states ---------------------------------------------------------------------------------


def _to_record(row: AlertStateRow) -> AlertRecord:
    return AlertRecord(
        fingerprint=row.fingerprint,
        rule=row.rule,
        labels=dict(row.labels),
        state=row.state,  # type: ignore[arg-type]
        annotations=dict(row.annotations),
        active_since=row.active_since,
        fired_at=row.fired_at,
        resolved_at=row.resolved_at,
        clear_since=row.clear_since,
        last_value=row.last_value,
        threshold=row.threshold,
        last_eval_at=row.last_eval_at,
        last_notified_at=row.last_notified_at,
        notified_status=row.notified_status,  # type: ignore[arg-type]
    )


def _values(record: AlertRecord, now: datetime) -> dict[str, object]:
    return {
        "rule": record.rule,
        "labels": dict(record.labels),
        "annotations": dict(record.annotations),
        "state": record.state,
        "active_since": record.active_since,
        "fired_at": record.fired_at,
        "resolved_at": record.resolved_at,
        "clear_since": record.clear_since,
        "last_value": record.last_value,
        "threshold": record.threshold,
        "last_eval_at": record.last_eval_at,
        "last_notified_at": record.last_notified_at,
        "notified_status": record.notified_status,
        "updated_at": now,
    }


async def load_records(session: AsyncSession) -> dict[str, AlertRecord]:
    rows = (await session.scalars(select(AlertStateRow))).all()
    return {row.fingerprint: _to_record(row) for row in rows}


async def save_record(session: AsyncSession, record: AlertRecord, now: datetime) -> None:
    """Update the row of `record`, or insert it (an update that matched nothing means it is new)."""
    values = _values(record, now)
    result = await session.execute(
        update(AlertStateRow).where(AlertStateRow.fingerprint == record.fingerprint).values(**values)
    )
    if getattr(result, "rowcount", 0) == 0:
        session.add(AlertStateRow(fingerprint=record.fingerprint, **values))
        await session.flush()


async def delete_record(session: AsyncSession, fingerprint: str) -> None:
    await session.execute(delete(AlertStateRow).where(AlertStateRow.fingerprint == fingerprint))


async def alert_views(
    session: AsyncSession,
    *,
    now: datetime,
    windows: Sequence[MaintenanceWindow],
    include_inactive: bool = False,
) -> list[AlertView]:
    """Every stored alert, firing first (then by severity and rule), with its current mute status."""
    rows = (await session.scalars(select(AlertStateRow))).all()
    silences = await list_silences(session, now=now)
    views: list[AlertView] = []
    for row in rows:
        if row.state == "inactive" and not include_inactive:
            continue
        labels = dict(row.labels)
        reason = mute_reason(labels, now=now, silences=silences, windows=windows)
        views.append(
            AlertView(
                fingerprint=row.fingerprint,
                rule=row.rule,
                labels=labels,
                annotations=dict(row.annotations),
                state=row.state,  # type: ignore[arg-type]
                severity=labels.get("severity", ""),
                active_since=row.active_since,
                fired_at=row.fired_at,
                resolved_at=row.resolved_at,
                value=row.last_value,
                threshold=row.threshold,
                last_eval_at=row.last_eval_at,
                silenced=reason is not None,
                muted_by=reason,
            )
        )
    views.sort(
        key=lambda v: (
            _STATE_ORDER.get(v.state, 9), _SEVERITY_ORDER.get(v.severity, 9), v.rule, v.labels.get("probe", "")
        )
    )  # fmt: skip
    return views


# --- silences -------------------------------------------------------------------------------------


def _to_silence(row: SilenceRow) -> SilenceView:
    return SilenceView(
        id=row.id,
        matchers=dict(row.matchers),
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        comment=row.comment,
        created_by=row.created_by,
        created_at=row.created_at,
        expired_at=row.expired_at,
    )


async def list_silences(session: AsyncSession, *, now: datetime, include_expired: bool = False) -> list[SilenceView]:
    """Silences that are active or scheduled (and, with `include_expired`, past ones), newest first."""
    query = select(SilenceRow).order_by(SilenceRow.id.desc())
    if not include_expired:
        query = query.where(SilenceRow.expired_at.is_(None), SilenceRow.ends_at > now)
    return [_to_silence(row) for row in (await session.scalars(query)).all()]


async def add_silence(
    session: AsyncSession,
    *,
    matchers: dict[str, str],
    duration_s: float,
    comment: str,
    created_by: str,
    now: datetime,
    starts_at: datetime | None = None,
) -> SilenceView:
    """Insert a silence from `starts_at` (default now) for `duration_s`; ValueError for bad input."""
    if not duration_s > 0:
        raise ValueError("a silence needs a duration > 0")
    if not comment.strip():
        raise ValueError("a silence needs a comment (why is it muted?)")
    start = starts_at or now
    if start + timedelta(seconds=duration_s) <= now:
        raise ValueError("that silence would already be over")
    row = SilenceRow(
        matchers=normalize_matchers(matchers),
        starts_at=start,
        ends_at=start + timedelta(seconds=duration_s),
        comment=comment,
        created_by=created_by[:200] or "unknown",
        created_at=now,
        expired_at=None,
    )
    session.add(row)
    await session.flush()
    return _to_silence(row)


async def expire_silence(session: AsyncSession, silence_id: int, *, now: datetime) -> bool:
    """End a silence now; False if there is no such silence or it already ended."""
    result = await session.execute(
        update(SilenceRow)
        .where(SilenceRow.id == silence_id, SilenceRow.expired_at.is_(None), SilenceRow.ends_at > now)
        .values(expired_at=now)
    )
    return bool(getattr(result, "rowcount", 0))
