"""CLI commands of the daemon feature: `run` (the daemon)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from monitor.cli import config_option, db_option
from monitor.settings import load_settings


def _daemon_logging() -> None:
    """A daemon logs its lifecycle: INFO unless --log-level was given; APScheduler's per-run lines stay quiet."""
    root = click.get_current_context().find_root()
    if root.get_parameter_source("log_level") in (ParameterSource.DEFAULT, None):
        logging.getLogger().setLevel(logging.INFO)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)


@click.command()
@config_option(required=True)
@db_option
def run(config: Path, db: str | None) -> None:
    """Run the daemon: probes on schedule, alerts, API and /metrics on 127.0.0.1:9464.

    SIGTERM or Ctrl-C stops it gracefully (a second one forces); SIGHUP reloads the config file.
    """
    from monitor.daemon import run_daemon

    _daemon_logging()
    settings = load_settings(config, db_url=db)
    sys.exit(run_daemon(settings, config_path=config, db_url=db))


def register(group: click.Group) -> None:
    """Add this feature's commands to the root `llm-monitor` group."""
    group.add_command(run)
