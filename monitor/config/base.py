"""The ground floor of the configuration: the shared model base and the field types every section uses.

One duration parser (`parse_duration`, behind `Seconds` and the CLI's `to_seconds`), one crontab
validator (`Crontab`, the parser the scheduler uses, imported lazily so that a Locust worker reading
settings never loads APScheduler or asyncio), one uniqueness check and one secret reader.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, Strict

from monitor.errors import ConfigError

__all__ = [
    "MAX_DAYS",
    "MAX_DURATION_S",
    "MAX_INT32",
    "Bool",
    "Crontab",
    "Days",
    "FieldError",
    "Int",
    "Model",
    "Name",
    "Number",
    "Seconds",
    "check_crontab",
    "check_headers",
    "choices",
    "parse_duration",
    "read_secret",
    "to_seconds",
    "unique",
]

# The longest duration any config field takes: longer is a typo, and overflows the scheduler's
# datetimes (APScheduler and `timedelta` overflow long before 1e300).
MAX_DURATION_S = 366 * 86400
MAX_DAYS = 36500  # retention: now - timedelta(days=...) must stay a valid datetime
MAX_INT32 = 2**31 - 1  # stored in INTEGER columns (PostgreSQL int4)

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class FieldError(ValueError):
    """A model-level check's error about one field below the model (`tools[0].function.name`).

    The loader appends `field` to the model's YAML path, so the one-line error names the exact spot.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Model(BaseModel):
    """Every config section: unknown keys are errors, values are frozen, floats finite.

    Strict, because YAML gives real numbers and booleans: a quoted "512" is a mistake, not a number.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def parse_duration(value: object) -> object:
    """`90`, `90s`, `15m`, `2h`, `7d`, `250ms` -> seconds; anything else is left for pydantic to reject."""
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration (use seconds or 30s, 5m, 2h, 7d)")
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number of seconds")
    return value


def to_seconds(value: float | str) -> float:
    """A CLI duration (`90`, `2m`, `1.5h`, `250ms`) in seconds; ConfigError if it is not one."""
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ConfigError(f"{value!r}: not a duration (use 30s, 5m, 2h, 7d)") from None
    if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{value!r}: not a duration")
    return float(seconds)


def check_crontab(value: str) -> str:
    """A 5-field crontab, checked by the parser the scheduler uses (times are UTC unless a zone is given)."""
    from apscheduler.triggers.cron import CronTrigger  # lazily: config must not load APScheduler

    try:
        CronTrigger.from_crontab(value, timezone="UTC")
    except ValueError as exc:
        raise ValueError(f"invalid crontab {value!r}: {exc}") from None
    return value


Name = Annotated[str, Field(pattern=_NAME, description="letters, digits, _ . : - (max 100)")]
# Seconds, as a number or `30s`/`5m`/`2h`/`7d`, finite and at most a leap year.
Seconds = Annotated[float, BeforeValidator(parse_duration), Strict(), Field(le=MAX_DURATION_S)]
Days = Annotated[float, Field(le=MAX_DAYS)]
Crontab = Annotated[str, AfterValidator(check_crontab)]
Int = Annotated[int, Strict()]
Number = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]


def unique(section: str, names: Sequence[str]) -> None:
    """ConfigError naming the second use of a name: `targets[2].name: duplicate name 'mock'`."""
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ConfigError(f"{section}[{i}].name: duplicate name {name!r}")
        seen.add(name)


def choices(names: Iterable[str]) -> str:
    ordered = sorted(names)
    return f"known: {', '.join(ordered)}" if ordered else "none defined"


def check_headers(value: Mapping[str, str]) -> None:
    """Refuse header names that are not HTTP tokens and values with line breaks (header injection)."""
    for name, text in value.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP header name")
        if any(c in text for c in "\r\n\0"):
            raise ValueError(f"header {name}: the value must not contain CR, LF or NUL")


def read_secret(env: Mapping[str, Any], field: str, name: str | None) -> SecretStr | None:
    """The secret held by environment variable `name` (None if no variable is named).

    ConfigError naming `field` if the variable is unset or empty, or holds a line break or NUL: every
    secret ends up in an HTTP header, where a line break would inject headers.
    """
    if name is None:
        return None
    value = env.get(name)
    if not value:
        raise ConfigError(f"{field}: environment variable {name} is not set")
    if any(c in value for c in "\r\n\0"):
        raise ConfigError(f"{field}: environment variable {name} contains a line break or NUL")
    return SecretStr(value)
