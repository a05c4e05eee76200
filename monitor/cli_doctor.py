"""CLI command of the doctor feature: `llm-monitor doctor`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from monitor.cli_options import config_option, db_option, target_options
from monitor.config import Settings, TargetSettings, load_settings, resolve_keys
from monitor.errors import ConfigError


def register(group: click.Group) -> None:
    """Add this feature's commands to the root `llm-monitor` group."""
    group.add_command(doctor)


@click.command()
@config_option()
@target_options
@click.option("--target", "target_name", help="With -c: the target to diagnose (default: the only one).")
@click.option("--api-key-env", help="Environment variable holding the server's API key (never printed or stored).")
@click.option(
    "--timeout-s",
    type=click.FloatRange(min=0, min_open=True),
    help="Per-request timeout in seconds (default: the target's timeout_s, 60).",
)
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def doctor(
    config: Path | None,
    base_url: str | None,
    model: str | None,
    target_name: str | None,
    api_key_env: str | None,
    timeout_s: float | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Walk the deployment checklist against a server and say what to fix. Exit 1 if any check fails."""
    from monitor.doctor import run_doctor

    settings, name = doctor_settings(
        config, base_url=base_url, model=model, db=db, target_name=target_name, api_key_env=api_key_env,
        timeout_s=timeout_s,
    )  # fmt: skip
    sys.exit(run_doctor(settings, name, as_json=as_json))


def doctor_settings(
    config: Path | None,
    *,
    base_url: str | None,
    model: str | None,
    db: str | None,
    target_name: str | None = None,
    api_key_env: str | None = None,
    timeout_s: float | None = None,
) -> tuple[Settings, str]:
    """Settings plus the name of the target to diagnose, with the flags' overrides applied to it."""
    if config is None and base_url is None:
        raise ConfigError("give --base-url URL --model NAME, or -c FILE [--target NAME]")
    settings = load_settings(config, base_url=base_url, model=model, db_url=db)
    name = _pick_target(settings, target_name, base_url is not None)
    updates: dict[str, object] = {}
    if api_key_env is not None:
        updates["api_key_env"] = api_key_env
    if timeout_s is not None:
        target = settings.target(name)
        first_byte_s = target.first_byte_timeout_s
        updates |= {
            "timeout_s": timeout_s,
            "connect_timeout_s": min(target.connect_timeout_s, timeout_s),
            "chunk_timeout_s": min(target.chunk_timeout_s, timeout_s),
            "first_byte_timeout_s": None if first_byte_s is None else min(first_byte_s, timeout_s),
        }
    if not updates:
        return settings, name
    targets = [
        TargetSettings.model_validate({**t.model_dump(), **updates}) if t.name == name else t for t in settings.targets
    ]
    settings = settings.model_copy(update={"targets": targets})
    if api_key_env is None:
        return settings, name
    try:
        # The key is read from the environment by monitor.config's loader, like every other secret.
        return resolve_keys(settings), name
    except ConfigError as exc:
        if api_key_env in str(exc):
            raise ConfigError(f"--api-key-env: environment variable {api_key_env} is not set") from None
        raise


def _pick_target(settings: Settings, target_name: str | None, from_flags: bool) -> str:
    names = [t.name for t in settings.targets]
    if target_name is not None:
        if target_name not in names:
            raise ConfigError(f"--target: unknown target {target_name!r} (targets: {', '.join(names) or 'none'})")
        return target_name
    if from_flags:
        return "default"  # load_settings names the --base-url target "default"
    if len(names) == 1:
        return names[0]
    if not names:
        raise ConfigError("the config defines no targets (add a targets: section, or use --base-url)")
    raise ConfigError(f"--target: the config has several targets ({', '.join(names)}); pick one")
