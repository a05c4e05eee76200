"""The alert state machine, pure: (previous record, condition, time, muted) -> (new record, what to send).

    inactive ──met──> pending ──met for for_s──> firing ──clear for keep_firing_for_s──> resolved
       ^                 │                        │  ^                                     │
       └───not met───────┘                        └──┘ met again: stays firing             └──met──> pending

Notifications (Alertmanager-like, one alert per message):
- `firing` when an alert starts firing, unless it is muted (silence or maintenance window); a muted
  firing alert is notified as soon as the mute ends and it is still firing.
- `firing` again every `repeat_interval_s` while it keeps firing and is not muted.
- `resolved` when a firing alert whose firing was notified resolves. This is sent even while
  muted, so that a receiver never keeps an incident open that llm-monitor has closed.
  An alert that fired and resolved entirely while muted sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from monitor.alerts.model import AlertState, NotifyStatus

__all__ = ["AlertRecord", "Step", "Timing", "advance", "retire"]


@dataclass(frozen=True, slots=True)
class Timing:
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    repeat_interval_s: float = 4 * 3600.0


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """The persisted state of one alert instance (a row of `alert_states`)."""

    fingerprint: str
    rule: str
    labels: dict[str, str]
    state: AlertState = "inactive"
    annotations: dict[str, str] = field(default_factory=dict)
    active_since: datetime | None = None
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    clear_since: datetime | None = None
    last_value: float | None = None
    threshold: float | None = None
    last_eval_at: datetime | None = None
    last_notified_at: datetime | None = None
    notified_status: NotifyStatus | None = None

    @property
    def active(self) -> bool:
        """Pending or firing: the timer must keep looking at it."""
        return self.state in ("pending", "firing")


@dataclass(frozen=True, slots=True)
class Step:
    record: AlertRecord
    notify: NotifyStatus | None = None


def _since(now: datetime, then: datetime | None) -> float:
    return float("inf") if then is None else (now - then).total_seconds()


def advance(prev: AlertRecord, met: bool, *, now: datetime, timing: Timing, muted: bool) -> Step:
    """Apply one evaluation to `prev`; the caller persists `record` and enqueues `notify` together."""
    rec = prev
    if met:
        if rec.state in ("inactive", "resolved"):
            rec = replace(
                rec, state="pending", active_since=now, fired_at=None, resolved_at=None, clear_since=None,
                notified_status=None,
            )  # fmt: skip
        if rec.state == "pending" and _since(now, rec.active_since) >= timing.for_s:
            rec = replace(rec, state="firing", fired_at=now)
        if rec.clear_since is not None:
            rec = replace(rec, clear_since=None)
    elif rec.state == "pending":
        rec = replace(rec, state="inactive", active_since=None)
    elif rec.state == "firing":
        clear_since = rec.clear_since or now
        if _since(now, clear_since) >= timing.keep_firing_for_s:
            rec = replace(rec, state="resolved", resolved_at=now, clear_since=None)
        else:
            rec = replace(rec, clear_since=clear_since)

    notify: NotifyStatus | None = None
    if rec.state == "firing" and not muted:
        if rec.notified_status != "firing" or _since(now, rec.last_notified_at) >= timing.repeat_interval_s:
            notify = "firing"
    elif rec.state == "resolved" and prev.state == "firing" and rec.notified_status == "firing":
        notify = "resolved"
    if notify is not None:
        rec = replace(rec, notified_status=notify, last_notified_at=now)
    return Step(rec, notify)


def retire(prev: AlertRecord, *, now: datetime) -> Step | None:
    """An alert whose rule (or probe) left the config: resolve it if it fired, else forget it (None)."""
    if prev.state != "firing":
        return None
    rec = replace(prev, state="resolved", resolved_at=now, clear_since=None)
    if prev.notified_status == "firing":
        return Step(replace(rec, notified_status="resolved", last_notified_at=now), "resolved")
    return Step(rec)
