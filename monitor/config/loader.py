"""YAML file + `MONITOR_*` environment + CLI flags -> one validated `Settings`.

This is the only module that reads the environment. Every validation error is turned into a
one-line `ConfigError` that names the YAML path, for example `probes[1].max_tokens: must be >= 1`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr, ValidationError

from monitor.config.alerts import resolve_receiver_secrets
from monitor.config.base import MAX_DURATION_S, FieldError, read_secret
from monitor.config.probes import default_probes
from monitor.config.settings import Settings
from monitor.config.strict_yaml import read_config_file
from monitor.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "ENV_VARS",
    "format_validation_error",
    "load_settings",
    "named_env_vars",
    "parse_mock_config",
    "parse_settings",
    "resolve_keys",
]

_M = TypeVar("_M", bound=BaseModel)
ENV_PREFIX = "MONITOR_"
# Every fixed variable llm-monitor reads: MONITOR_DB_URL here, the other two as CLI option fallbacks.
# Secrets are read from the variables a config names (see `named_env_vars`).
ENV_VARS = frozenset({f"{ENV_PREFIX}DB_URL", f"{ENV_PREFIX}CONFIG", f"{ENV_PREFIX}LOG_LEVEL"})


def load_settings(
    path: Path | None = None,
    *,
    base_url: str | None = None,
    model: str | None = None,
    db_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build `Settings` from a YAML file and/or target flags; `db_url` and `MONITOR_DB_URL` override storage.

    Precedence for the database URL: `db_url` (the --db flag), then `MONITOR_DB_URL`, then the file.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = read_config_file(path) if path is not None else {}
    if base_url is not None:
        target = {"name": "default", "base_url": base_url, "model": model}
        # A malformed section is left as it is, for validation to name (`targets: must be a list`).
        others = raw.get("targets") or []
        if isinstance(others, list):
            raw["targets"] = [target, *[t for t in others if not isinstance(t, dict) or t.get("name") != "default"]]
        if path is None:
            raw["probes"] = default_probes("default")
    elif model is not None:
        raise ConfigError("--model needs --base-url")
    url = db_url or env.get(f"{ENV_PREFIX}DB_URL")
    if url and isinstance(raw.get("storage") or {}, dict):
        raw["storage"] = {**(raw.get("storage") or {}), "url": url}
    settings = parse_settings(raw)
    return resolve_keys(settings, env)


def parse_settings(raw: Mapping[str, Any]) -> Settings:
    """Validate a decoded config mapping, turning pydantic errors into one-line ConfigErrors."""
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def named_env_vars(settings: Settings) -> set[str]:
    """The environment variables a config names for its secrets (api_key_env, token_env, secret_env)."""
    names = {t.api_key_env for t in settings.targets if t.api_key_env}
    names |= {r.secret_env for r in settings.receivers if r.secret_env}
    names |= {name for name in (settings.api.token_env, settings.api.read_token_env) if name}
    return names


def resolve_keys(settings: Settings, environ: Mapping[str, str] | None = None) -> Settings:
    """Read every secret the settings name (`api_key_env`, `api.token_env`) from the environment."""
    env = os.environ if environ is None else environ
    token = read_secret(env, "api.token_env", settings.api.token_env)
    read_token = read_secret(env, "api.read_token_env", settings.api.read_token_env)
    keys: dict[str, SecretStr] = {}
    for i, target in enumerate(settings.targets):
        key = read_secret(env, f"targets[{i}].api_key_env", target.api_key_env)
        if key is not None:
            keys[target.name] = key
    secrets = resolve_receiver_secrets(settings.receivers, env)
    update = {"api_keys": keys, "api_token": token, "api_read_token": read_token, "receiver_secrets": secrets}
    return settings.model_copy(update=update)


def format_validation_error(exc: ValidationError) -> str:
    """First error as `path: message`, plus a count of the others."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    path = _loc_to_path(first["loc"])
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):  # a model-level check that names the field below the model
        path = f"{path}.{cause.field}" if path else cause.field
    message = _friendly(first)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{path}: {message}{more}" if path else f"{message}{more}"


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after[_check_shape()]", "function-before[_collect_sampling()]"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


# Pydantic error types whose message is a fixed phrase.
_PHRASES = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
    "string_pattern_mismatch": "must use letters, digits, _ . : - only (max 100 characters)",
    "model_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "finite_number": "must be a finite number",
}
_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<=")}
_PROBE_EXTRA = "unknown field (not a probe option nor a known sampling parameter; put custom fields under extra_body)"


def _friendly(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    loc = error["loc"]
    if kind == "extra_forbidden" and len(loc) == 3 and loc[0] == "probes":
        return _PROBE_EXTRA
    if kind in _PHRASES:
        quoted = kind.endswith("_type") and kind != "string_type" and isinstance(error.get("input"), str)
        return _PHRASES[kind] + (" (without quotes)" if quoted else "")
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        bound = ctx[key]
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        hint = " (366 days)" if bound == MAX_DURATION_S and key == "le" else ""
        return f"must be {op} {bound}{hint}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    msg = str(error["msg"])
    return msg[:1].lower() + msg[1:]


def parse_mock_config(model: type[_M], values: Mapping[str, Any]) -> _M:
    """Validate mock flags with the same one-line error format as the config file."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        field, sep, rest = format_validation_error(exc).partition(": ")
        raise ConfigError(f"--{field.replace('_', '-')}{sep}{rest}" if sep else field) from None
