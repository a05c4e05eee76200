"""The `llm-monitor` command line: parse flags, build Settings, call one function. No logic here.

Plain click (not typer): typer >= 0.2x vendors its own click fork, and the `mock` command's flags
are generated from MockConfig with click's public API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console

from monitor import __version__
from monitor.cli_options import config_option, db_option, target_options
from monitor.config import Settings, load_settings
from monitor.errors import ConfigError, MonitorError

logger = logging.getLogger(__name__)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="llm-monitor", message="%(prog)s %(version)s")
@click.option(
    "--log-level", default="warning", show_default=True, envvar="MONITOR_LOG_LEVEL",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False), help="Log level (stderr).",
)  # fmt: skip
def cli(log_level: str) -> None:
    """Canary probes, trend alerts and load tests that keep OpenAI-compatible LLM endpoints honest."""
    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _settings(config: Path | None, base_url: str | None, model: str | None, db: str | None) -> Settings:
    if config is None and base_url is None:
        raise ConfigError("give --base-url URL or -c FILE (or try `llm-monitor demo`)")
    return load_settings(config, base_url=base_url, model=model, db_url=db)


@cli.command()
@config_option()
@target_options
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of results instead of a table.")
@click.option("--probe", "only", multiple=True, help="Run only this probe (repeatable).")
def probe(
    config: Path | None, base_url: str | None, model: str | None, db: str | None, as_json: bool, only: tuple[str, ...]
) -> None:
    """Fire every configured probe once, store the results, print them. Exit 1 if any failed."""
    settings = _settings(config, base_url, model, db)
    sys.exit(run_probe(settings, as_json=as_json, only=list(only)))


def run_probe(settings: Settings, *, as_json: bool, only: list[str]) -> int:
    """Run the probes once; 0 when every result is ok, 1 otherwise."""
    from monitor.oneshot import probe_once
    from monitor.probe_table import print_results, print_unreachable

    unknown = sorted(set(only) - {p.name for p in settings.probes})
    if unknown:
        raise ConfigError(f"--probe: unknown probe {unknown[0]!r}")
    probes = [p for p in settings.probes if not only or p.name in only]
    if not probes:
        raise ConfigError("no probes configured (add a probes: section, or use --base-url for the default set)")
    results = asyncio.run(probe_once(settings, probes))
    if as_json:
        print(json.dumps([r.to_json() for r in results], ensure_ascii=False, indent=2))
    elif not print_unreachable(Console(stderr=True), results):
        print_results(Console(), results)
    return 0 if all(r.ok for r in results) else 1


@cli.command()
def init() -> None:
    """Print a commented example config: llm-monitor init > monitor.yaml"""
    from monitor.example import EXAMPLE_CONFIG

    click.echo(EXAMPLE_CONFIG, nl=False)


@cli.command("check-config")
@config_option(required=True)
def check_config(config: Path) -> None:
    """Validate a config file; exit 0 if `run` would start with it, 2 with a one-line error if not."""
    from monitor.daemon import check_runnable

    settings = load_settings(config)
    check_runnable(settings)
    for line in settings.advice():
        click.echo(f"{config}: warning: {line}", err=True)
    counts = {
        "targets": len(settings.targets), "probes": len(settings.probes), "rules": len(settings.rules),
        "receivers": len(settings.receivers), "maintenance windows": len(settings.maintenance),
    }  # fmt: skip
    click.echo(f"{config}: ok ({', '.join(f'{n} {name}' for name, n in counts.items())})")


@cli.command()
@config_option()
@click.option("--url", help="Readiness URL to ask (default: /readyz of the config's api.host and api.port).")
@click.option("--timeout-s", type=click.FloatRange(min=0.1), default=5.0, show_default=True, help="Give up after this.")
def check(config: Path | None, url: str | None, timeout_s: float) -> None:
    """Exit 0 if the running daemon is ready, 1 if not (for container healthchecks)."""
    from monitor.health import check_health

    settings = load_settings(config) if config is not None else None
    sys.exit(check_health(settings, url=url, timeout_s=timeout_s))


@cli.group()
def db() -> None:
    """Database schema migrations."""


@db.command("upgrade")
@click.argument("revision", default="head")
@config_option()
@db_option
def db_upgrade(revision: str, config: Path | None, db: str | None) -> None:
    """Apply migrations up to REVISION (default: head)."""
    from monitor.store.db import censor_url, upgrade_sync

    settings = load_settings(config, db_url=db)
    upgrade_sync(settings.storage.url, revision)
    click.echo(f"{censor_url(settings.storage.url)}: upgraded to {revision}")


@db.command("downgrade")
@click.argument("revision")
@config_option()
@db_option
def db_downgrade(revision: str, config: Path | None, db: str | None) -> None:
    """Revert migrations down to REVISION (for example -1 or base)."""
    from monitor.store.db import censor_url, downgrade_sync

    settings = load_settings(config, db_url=db)
    downgrade_sync(settings.storage.url, revision)
    click.echo(f"{censor_url(settings.storage.url)}: downgraded to {revision}")


def _fail(message: str, code: int) -> NoReturn:
    print(f"llm-monitor: error: {message}", file=sys.stderr)
    sys.exit(code)


def build_cli() -> click.Group:
    """The root group with every feature's commands (each feature module owns its own commands)."""
    from monitor import cli_alerts, cli_daemon, cli_doctor, cli_fingerprint, cli_loadtest
    from monitor.mockcli import add_mock_command

    add_mock_command(cli)
    for feature in (cli_daemon, cli_alerts, cli_doctor, cli_fingerprint, cli_loadtest):
        feature.register(cli)
    return cli


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every failure becomes one line on stderr and an exit code, never a traceback."""
    command = build_cli()
    try:
        code = command.main(args=argv, prog_name="llm-monitor", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        _fail(f"{exc.format_message()}{where}", 2)
    except click.ClickException as exc:
        _fail(exc.format_message(), 2)
    except click.Abort:
        _fail("aborted", 130)
    except MonitorError as exc:  # ConfigError, StoreError: usage and setup problems
        _fail(str(exc), 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # the last line of defence: one line; the traceback only at debug level
        logger.debug("unexpected error", exc_info=True)
        _fail(f"internal error: {type(exc).__name__}: {exc} (run with --log-level debug for details)", 70)
    sys.exit(code if isinstance(code, int) else 0)
