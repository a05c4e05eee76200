"""Reading a text file a user named (the config, `--prompts`, `--trace`, a length histogram).

Bounded: at most ``max_bytes`` are read, so a wrong path to a multi-gigabyte file is a one-line error,
not a machine out of memory. UTF-8, with a leading byte-order mark dropped (editors on Windows write
one). Every error is a ``ConfigError`` that starts with what the file is for. The Locust process
imports this module: standard library only.
"""

from __future__ import annotations

from pathlib import Path

from monitor.errors import ConfigError

__all__ = ["read_text_file"]

_MIB = 1024 * 1024


def _size(max_bytes: int) -> str:
    return f"{max_bytes // _MIB} MiB" if max_bytes >= _MIB and max_bytes % _MIB == 0 else f"{max_bytes:,} bytes"


def read_text_file(path: Path, what: str, max_bytes: int) -> str:
    """``path`` as text, read once and at most ``max_bytes``; a ``ConfigError`` names ``what`` and the cause."""
    try:
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise ConfigError(f"{what}: {path}: larger than {_size(max_bytes)}")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what}: {path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
