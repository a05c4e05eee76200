"""CLI commands of the alerts feature: `alerts`, `silence add|list|expire`, `notify test`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from monitor.cli_options import config_option, db_option, os_user
from monitor.errors import ConfigError


def _label(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r} is not NAME=VALUE", ctx=ctx, param=param)
        labels[key.strip()] = val
    return labels


def register(group: click.Group) -> None:
    """Add this feature's commands to the root `llm-monitor` group."""

    @group.command()
    @config_option()
    @db_option
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
    @click.option("--all", "include_inactive", is_flag=True, help="Also list inactive alerts.")
    def alerts(config: Path | None, db: str | None, as_json: bool, include_inactive: bool) -> None:
        """Show the current alert states (from the database; works with or without a running daemon)."""
        from monitor.alerts.commands import run_alerts
        from monitor.config import load_settings

        settings = load_settings(config, db_url=db)
        sys.exit(run_alerts(settings, as_json=as_json, include_inactive=include_inactive))

    @group.group()
    def silence() -> None:
        """Mute notifications of matching alerts for a while."""

    @silence.command("add")
    @config_option()
    @db_option
    @click.option("--rule", help="The rule (alertname) to silence.")
    @click.option("--label", "labels", multiple=True, callback=_label, help="Also match this label: NAME=VALUE.")
    @click.option("--for", "duration", required=True, help="How long: 30m, 2h, 1d.")
    @click.option("--comment", required=True, help="Why (shown in `silence list` and the API).")
    @click.option("--author", help="Who is silencing (default: your user name).")
    def silence_add(
        config: Path | None, db: str | None, rule: str | None, labels: dict[str, str], duration: str, comment: str,
        author: str | None,
    ) -> None:  # fmt: skip
        """Add a silence; prints its id."""
        from monitor.alerts.commands import run_silence_add
        from monitor.config import load_settings, to_seconds

        try:
            duration_s = to_seconds(duration)
        except ConfigError as exc:
            raise ConfigError(f"--for: {exc}") from None
        matchers = {**labels, **({"alertname": rule} if rule else {})}
        if not matchers:
            raise ConfigError("silence add: give --rule NAME and/or --label NAME=VALUE")
        settings = load_settings(config, db_url=db)
        sys.exit(
            run_silence_add(settings, matchers=matchers, duration_s=duration_s, comment=comment,
                            author=author or os_user())
        )  # fmt: skip

    @silence.command("list")
    @config_option()
    @db_option
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @click.option("--all", "include_expired", is_flag=True, help="Also list expired silences.")
    def silence_list(config: Path | None, db: str | None, as_json: bool, include_expired: bool) -> None:
        """List active and scheduled silences."""
        from monitor.alerts.commands import run_silence_list
        from monitor.config import load_settings

        settings = load_settings(config, db_url=db)
        sys.exit(run_silence_list(settings, as_json=as_json, include_expired=include_expired))

    @silence.command("expire")
    @click.argument("silence_id", metavar="ID", type=int)
    @config_option()
    @db_option
    def silence_expire(silence_id: int, config: Path | None, db: str | None) -> None:
        """End a silence now."""
        from monitor.alerts.commands import run_silence_expire
        from monitor.config import load_settings

        settings = load_settings(config, db_url=db)
        sys.exit(run_silence_expire(settings, silence_id))

    @group.group()
    def notify() -> None:
        """Notification receivers."""

    @notify.command("test")
    @click.argument("receiver")
    @config_option(required=True)
    def notify_test(receiver: str, config: Path) -> None:
        """Send a test message to RECEIVER in its format; prints the HTTP status (exit 1 if not accepted)."""
        from monitor.alerts.commands import run_notify_test
        from monitor.config import load_settings

        settings = load_settings(config)
        sys.exit(run_notify_test(settings, receiver))
