"""The options several commands share (`-c/--config`, `--db`, `--base-url/--model`).

Their own module, so that the feature command modules (cli_daemon, cli_alerts, ...) import these
and `cli` imports them, without an import cycle between `cli` and its features.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["config_option", "db_option", "os_user", "target_options"]

F = TypeVar("F", bound=Callable[..., Any])


def config_option(required: bool = False) -> Callable[[F], F]:
    return click.option(
        "--config", "-c", type=click.Path(path_type=Path), required=required, envvar="MONITOR_CONFIG",
        help="YAML config file (see `llm-monitor init`). Env: MONITOR_CONFIG.",
    )  # fmt: skip


def target_options(f: F) -> F:
    f = click.option("--model", help="Model name to request (default: the server's).")(f)
    f = click.option("--base-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1.")(f)
    return f


db_option = click.option("--db", help="Database URL; overrides storage.url and the MONITOR_DB_URL variable.")


def os_user() -> str:
    """The OS user (from the password database, not the environment), for `created_by` and `accepted_by`."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError, AttributeError):
        return "cli"
