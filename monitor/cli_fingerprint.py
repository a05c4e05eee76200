"""CLI commands of the deployment fingerprint: `fingerprint show|accept`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from monitor.cli_options import config_option, db_option, os_user
from monitor.config.deployment import FINGERPRINT_COMPONENTS


def register(group: click.Group) -> None:
    """Add this feature's commands to the root `llm-monitor` group."""

    @group.group()
    def fingerprint() -> None:
        """What identifies each deployment (models, tokenizer, template, ...) against its accepted baseline."""

    @fingerprint.command("show")
    @config_option()
    @db_option
    @click.option("--target", required=True, help="The target whose stored fingerprint to show.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
    def show(config: Path | None, db: str | None, target: str, as_json: bool) -> None:
        """Show the latest fingerprint of a target against its baseline, with a diff of what drifted."""
        from monitor.config import load_settings
        from monitor.fingerprint.commands import run_fingerprint_show

        sys.exit(run_fingerprint_show(load_settings(config, db_url=db), target, as_json=as_json))

    @fingerprint.command("accept")
    @config_option()
    @db_option
    @click.option("--target", required=True, help="The target whose latest fingerprint becomes the baseline.")
    @click.option(
        "--component", "components", multiple=True, type=click.Choice(FINGERPRINT_COMPONENTS),
        help="Accept only this component (repeatable; default: every component).",
    )  # fmt: skip
    @click.option("--by", "author", help="Who accepts it (default: your user name).")
    def accept(
        config: Path | None, db: str | None, target: str, components: tuple[str, ...], author: str | None
    ) -> None:
        """Accept the latest fingerprint as the new baseline (after an intended upgrade); its drift resolves."""
        from monitor.config import load_settings
        from monitor.fingerprint.commands import run_fingerprint_accept

        settings = load_settings(config, db_url=db)
        sys.exit(run_fingerprint_accept(settings, target, list(components) or None, by=author or os_user()))
