"""The `llm-monitor` command line: parse flags, build Settings, call one function. No logic here."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import click
import typer
from rich.console import Console

from monitor import __version__
from monitor.errors import ConfigError, MonitorError
from monitor.settings import Settings, load_settings

logger = logging.getLogger(__name__)

app = typer.Typer(
    name="llm-monitor",
    help="Canary probes, trend alerts and load tests that keep OpenAI-compatible LLM endpoints honest.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (see `llm-monitor init`).", envvar="MONITOR_CONFIG"),
]
BaseUrlOpt = Annotated[
    str | None, typer.Option("--base-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1.")
]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Model name to request (default: the server's).")]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Database URL; overrides storage.url and MONITOR_DB_URL (read by settings)."),
]


def _version(value: bool) -> None:
    if value:
        print(f"llm-monitor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.", envvar="MONITOR_LOG_LEVEL")
    ] = "warning",
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise ConfigError(f"--log-level: unknown level {log_level!r} (debug, info, warning, error)")
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _settings(config: Path | None, base_url: str | None, model: str | None, db: str | None) -> Settings:
    if config is None and base_url is None:
        raise ConfigError("give --base-url URL or -c FILE (or try `llm-monitor demo`)")
    return load_settings(config, base_url=base_url, model=model, db_url=db)


@app.command()
def probe(
    config: ConfigOpt = None,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    db: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of results instead of a table.")] = False,
    only: Annotated[list[str] | None, typer.Option("--probe", help="Run only this probe (repeatable).")] = None,
) -> None:
    """Fire every configured probe once, store the results, print them. Exit 1 if any failed."""
    settings = _settings(config, base_url, model, db)
    raise typer.Exit(run_probe(settings, as_json=as_json, only=only or []))


def run_probe(settings: Settings, *, as_json: bool, only: list[str]) -> int:
    from monitor.oneshot import probe_once
    from monitor.report import print_results, print_unreachable

    probes = [p for p in settings.probes if not only or p.name in only]
    unknown = sorted(set(only) - {p.name for p in settings.probes})
    if unknown:
        raise ConfigError(f"--probe: unknown probe {unknown[0]!r}")
    if not probes:
        raise ConfigError("no probes configured (add a probes: section, or use --base-url for the default set)")
    results = asyncio.run(probe_once(settings, probes))
    if as_json:
        print(json.dumps([r.to_json() for r in results], ensure_ascii=False, indent=2))
    elif not print_unreachable(_stderr(), results):
        print_results(Console(), results)
    return 0 if all(r.ok for r in results) else 1


@app.command()
def init() -> None:
    """Print a commented example config; save it with `llm-monitor init > monitor.yaml`."""
    from monitor.example import EXAMPLE_CONFIG

    print(EXAMPLE_CONFIG, end="")


@app.command("check-config")
def check_config(config: Annotated[Path, typer.Option("--config", "-c", help="YAML config file.")]) -> None:
    """Validate a config file; exit 0 if valid, 2 with a one-line error if not."""
    settings = load_settings(config)
    print(f"{config}: ok ({len(settings.targets)} targets, {len(settings.probes)} probes)")


@app.command()
def demo(
    db: DbOpt = None,
    port: Annotated[int, typer.Option("--port", help="Port for the bundled mock (0 = any free port).")] = 0,
) -> None:
    """Probe the bundled vLLM mock once on SQLite and show the table (no GPU, no setup)."""
    from monitor.demo import run_demo

    raise typer.Exit(run_demo(db_url=db, port=port))


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Apply migrations up to REVISION (default: head)."""
    from monitor.store.db import upgrade_sync

    settings = load_settings(config, db_url=db)
    upgrade_sync(settings.storage.url, revision)
    print(f"database upgraded to {revision}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base.")],
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Revert migrations down to REVISION."""
    from monitor.store.db import downgrade_sync

    settings = load_settings(config, db_url=db)
    downgrade_sync(settings.storage.url, revision)
    print(f"database downgraded to {revision}")


def _stderr() -> Console:
    return Console(stderr=True)


def _fail(message: str, code: int) -> NoReturn:
    print(f"llm-monitor: error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every failure becomes one line on stderr and an exit code, never a traceback."""
    from monitor.mockcli import add_mock_command

    command = typer.main.get_command(app)
    assert isinstance(command, click.Group)
    add_mock_command(command)
    try:
        code = command.main(args=argv, prog_name="llm-monitor", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        _fail(f"{exc.format_message()}{where}", 2)
    except click.Abort:
        _fail("aborted", 130)
    except ConfigError as exc:
        _fail(str(exc), 2)
    except MonitorError as exc:
        _fail(str(exc), 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # the last line of defence: one line, the traceback only at debug level
        logger.debug("unexpected error", exc_info=True)
        _fail(f"internal error: {type(exc).__name__}: {exc} (run with --log-level debug for details)", 70)
    sys.exit(code if isinstance(code, int) else 0)
