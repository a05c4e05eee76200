"""Is an alert muted right now: by an active silence, or by a maintenance window from the config?"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from monitor.alerts.model import SilenceView
from monitor.config import MaintenanceWindow

__all__ = ["in_window", "mute_reason", "normalize_matchers"]


def in_window(window: MaintenanceWindow, now: datetime) -> bool:
    """Whether `now` falls in [start, start + duration) for some cron start of `window`."""
    # The first cron time after (now - duration) starts a window covering now iff it is <= now.
    # (APScheduler 3 can only look forward, hence this formulation; the microsecond makes the end exclusive.)
    after = now - timedelta(seconds=window.duration_s) + timedelta(microseconds=1)
    start = window.trigger().get_next_fire_time(None, after)
    return start is not None and start <= now


def _window_covers(window: MaintenanceWindow, labels: Mapping[str, str]) -> bool:
    return window.scope.covers(labels.get("probe", ""), labels.get("target", ""))


def mute_reason(
    labels: Mapping[str, str],
    *,
    now: datetime,
    silences: Sequence[SilenceView],
    windows: Sequence[MaintenanceWindow],
) -> str | None:
    """`silence <id>` or `maintenance <name>` if notifications for `labels` are held now, else None."""
    for silence in silences:
        if silence.active(now) and silence.matches(labels):
            return f"silence {silence.id}"
    for window in windows:
        if _window_covers(window, labels) and in_window(window, now):
            return f"maintenance {window.name}"
    return None


def normalize_matchers(matchers: Mapping[str, str]) -> dict[str, str]:
    """`rule` is accepted as a friendlier name for `alertname`; at least one matcher is required."""
    out: dict[str, str] = {}
    for key, value in matchers.items():
        name = "alertname" if key == "rule" else key
        if name in out and out[name] != value:
            raise ValueError(f"conflicting matchers for {name!r}: {out[name]!r} and {value!r}")
        out[name] = value
    if not out:
        raise ValueError("a silence needs at least one matcher (for example --rule NAME)")
    return out
