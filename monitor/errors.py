"""The one error hierarchy of llm-monitor.

    MonitorError
    ├── ConfigError          bad YAML, bad flags, bad values (exit code 2)
    ├── StoreError           the database cannot be reached or written
    └── ProbeError           a probe could not produce a measurement
        ├── ProbeConnectError
        ├── ProbeTimeout     (carries the phase: connect, first_byte, gap, total)
        └── ProbeBadResponse

Probes normally *return* a classified result instead of raising; the exceptions exist for
callers (doctor, CLI) that want to stop at the first failure. Nothing above `probes.py`
imports aiohttp exception types.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "MonitorError",
    "ProbeBadResponse",
    "ProbeConnectError",
    "ProbeError",
    "ProbeTimeout",
    "StoreError",
]


class MonitorError(Exception):
    """Base class: its `str()` is a one-line message fit for a terminal."""


class ConfigError(MonitorError):
    """Invalid configuration. `str()` names the field, for example `probes[1].max_tokens: ...`."""


class StoreError(MonitorError):
    """The database failed; the message names the (censored) URL or the operation."""


class ProbeError(MonitorError):
    """A request to a target failed before a measurement existed."""


class ProbeConnectError(ProbeError):
    pass


class ProbeTimeout(ProbeError):
    def __init__(self, message: str, *, phase: str) -> None:
        super().__init__(message)
        self.phase = phase


class ProbeBadResponse(ProbeError):
    pass
