"""Config models for alert rules, receivers and maintenance windows (placeholder: no fields yet).

Pure pydantic: imported by monitor.settings, so it must not import monitor.settings at runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from monitor.settings import Settings


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleSettings(_Model):
    """One alert rule (placeholder)."""


class ReceiverSettings(_Model):
    """One notification receiver (placeholder)."""


class MaintenanceWindow(_Model):
    """A recurring window during which notifications are held (placeholder)."""


def check_references(settings: Settings) -> None:
    """Cross-field checks (rule scopes, receiver names); raise ConfigError naming the YAML path."""
