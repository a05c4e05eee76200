"""CLI commands of the alerts feature (placeholder: registers nothing yet)."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Add this feature's commands to the root `llm-monitor` group."""
