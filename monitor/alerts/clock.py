"""Kept for old imports only: the clock lives in `monitor.clock` (one owner); import it from there."""

from __future__ import annotations

from monitor.clock import Clock, ManualClock, SystemClock

__all__ = ["Clock", "ManualClock", "SystemClock"]
