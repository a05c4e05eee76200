"""Plain value types of the alerting feature: alert snapshots, notifications, views for the API and CLI."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "AlertSnapshot",
    "AlertState",
    "AlertView",
    "Notification",
    "NotifyStatus",
    "SilenceView",
    "deployment_key",
    "fingerprint",
    "iso",
    "parse_iso",
]

AlertState = Literal["inactive", "pending", "firing", "resolved"]
NotifyStatus = Literal["firing", "resolved"]


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable 16-hex-digit id of a label set (order-independent), like Alertmanager's fingerprint."""
    canonical = json.dumps(sorted(labels.items()), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def deployment_key(labels: Mapping[str, str]) -> tuple[str, str] | None:
    """("check", id) of a doctor alert, ("component", name) of a drift alert; None for probe alerts."""
    if labels.get("probe"):
        return None
    for label in ("check", "component"):
        if labels.get(label):
            return label, labels[label]
    return None


def iso(when: datetime | None) -> str | None:
    """RFC 3339 in UTC with a `Z` suffix (None stays None)."""
    if when is None:
        return None
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class AlertSnapshot:
    """What one notification says about one alert; stored in the outbox as JSON, rendered per format."""

    name: str
    status: NotifyStatus
    labels: dict[str, str]
    annotations: dict[str, str]
    severity: str
    value: float | None
    threshold: float | None
    started_at: datetime | None
    ended_at: datetime | None
    fingerprint: str
    # The alert state when the message was written (a repeat notification says firing, too).
    state: str = "firing"

    @property
    def probe(self) -> str | None:
        return self.labels.get("probe")

    @property
    def target(self) -> str | None:
        return self.labels.get("target")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "state": self.state,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "severity": self.severity,
            "value": self.value,
            "threshold": self.threshold,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "fingerprint": self.fingerprint,
            "probe": self.probe,
            "target": self.target,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AlertSnapshot:
        return cls(
            name=data["name"],
            status=data["status"],
            state=data.get("state", data["status"]),
            labels=dict(data["labels"]),
            annotations=dict(data["annotations"]),
            severity=data["severity"],
            value=data["value"],
            threshold=data["threshold"],
            started_at=parse_iso(data["started_at"]),
            ended_at=parse_iso(data["ended_at"]),
            fingerprint=data["fingerprint"],
        )


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one receiver: the alert snapshot plus delivery identity."""

    idempotency_key: str
    receiver: str
    alert: AlertSnapshot
    created_at: datetime
    external_url: str


@dataclass(frozen=True, slots=True)
class AlertView:
    """The current state of one alert instance, for the API, the CLI and the dashboard."""

    fingerprint: str
    rule: str
    labels: dict[str, str]
    annotations: dict[str, str]
    state: AlertState
    severity: str
    active_since: datetime | None
    fired_at: datetime | None
    resolved_at: datetime | None
    value: float | None
    threshold: float | None
    last_eval_at: datetime | None
    # Notifications are held: by a silence or a maintenance window (muted_by says which).
    silenced: bool
    muted_by: str | None

    @property
    def probe(self) -> str | None:
        return self.labels.get("probe")

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "rule": self.rule,
            "probe": self.probe,
            "target": self.labels.get("target"),
            "state": self.state,
            "severity": self.severity,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "active_since": iso(self.active_since),
            "fired_at": iso(self.fired_at),
            "resolved_at": iso(self.resolved_at),
            "value": self.value,
            "threshold": self.threshold,
            "last_eval_at": iso(self.last_eval_at),
            "silenced": self.silenced,
            "muted_by": self.muted_by,
        }


@dataclass(frozen=True, slots=True)
class SilenceView:
    """One silence; it mutes alerts whose labels match every matcher while it is active."""

    id: int
    matchers: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    comment: str
    created_by: str
    created_at: datetime
    expired_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.expired_at is None and self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.matchers.items())

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "matchers": dict(self.matchers),
            "starts_at": iso(self.starts_at),
            "ends_at": iso(self.ends_at),
            "comment": self.comment,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
            "expired_at": iso(self.expired_at),
        }
        if now is not None:
            out["active"] = self.active(now)
        return out
