"""CLI commands of the daemon feature: `run` (the daemon) and `demo` (mock + daemon: an alert's whole life)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from monitor.cli_options import config_option, db_option
from monitor.config import load_settings


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


@click.command()
@db_option
@click.option(
    "--duration-s", type=click.FloatRange(min=5), default=75.0, show_default=True,
    help="How long to run; the fault starts at a fifth of it and ends at half of it.",
)  # fmt: skip
@click.option(
    "--port", type=click.IntRange(0, 65535), default=9464, show_default=True,
    help="API port (if taken, any free port is used).",
)  # fmt: skip
def demo(db: str | None, duration_s: float, port: int) -> None:
    """The bundled vLLM mock with a fault schedule, watched by the daemon on SQLite: an alert fires and resolves."""
    from monitor.demo import run_demo

    sys.exit(run_demo(db_url=db, duration_s=duration_s, port=port))


def register(group: click.Group) -> None:
    """Add this feature's commands to the root `llm-monitor` group."""
    group.add_command(run)
    group.add_command(demo)
