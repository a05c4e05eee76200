"""Arrival traces to replay: Mooncake JSONL and BurstGPT CSV, read into one row type.

* Mooncake (``kvcache-ai/Mooncake`` traces): one JSON object a line,
  ``{"timestamp": ms, "input_length": n, "output_length": n, "hash_ids": [...]}``. Each hash id
  names a block of ``BLOCK_TOKENS`` prompt tokens; requests that share a hash id share that block
  (the plan gives them identical text there, so a prefix cache sees the reuse).
* BurstGPT (``HPMLL/BurstGPT``): CSV with the header
  ``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type``, Timestamp in seconds.
  Rows with 0 response tokens are requests that failed in the original service; they are skipped
  (a replay cannot ask a server to fail), and the count of skipped rows is reported.

``auto`` picks the format from the first non-blank character (``{``: Mooncake, else BurstGPT).
Arrival offsets are relative to the first row, in the trace's own seconds. Errors are
``ConfigError("--trace: FILE:LINE: ...")``. Pure file reading; no I/O at import.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.errors import ConfigError
from monitor.textfile import read_text_file

__all__ = ["BLOCK_TOKENS", "MAX_TRACE_ROWS", "Trace", "TraceRow", "parse_trace", "read_trace"]

BLOCK_TOKENS = 512  # Mooncake's hash_ids block size
MAX_TRACE_ROWS = 200_000
MAX_TRACE_BYTES = 64 * 1024 * 1024
MAX_LENGTH = 1_000_000  # tokens; a longer length is a broken row, not a request
BURSTGPT_COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type")


@dataclass(frozen=True, slots=True)
class TraceRow:
    at_s: float  # offset from the first row, in the trace's own seconds
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] = ()  # Mooncake's shared 512-token blocks (empty: a unique prompt)


@dataclass(frozen=True, slots=True)
class Trace:
    format: str  # "mooncake" | "burstgpt"
    rows: tuple[TraceRow, ...]  # sorted by at_s
    skipped: int = 0  # BurstGPT rows with 0 response tokens (failed in the original service)

    @property
    def span_s(self) -> float:
        """From the first arrival to one mean gap after the last (N arrivals take N gaps, like a rate)."""
        if len(self.rows) < 2:
            return 1.0
        last = self.rows[-1].at_s
        return last + last / (len(self.rows) - 1) if last > 0 else 1.0


def read_trace(path: Path, fmt: str = "auto") -> Trace:
    return parse_trace(read_text_file(path, "--trace", MAX_TRACE_BYTES), fmt, name=str(path))


def parse_trace(text: str, fmt: str = "auto", *, name: str = "trace") -> Trace:
    """A trace from its text; ``fmt`` is auto, mooncake or burstgpt."""
    if fmt == "auto":
        fmt = "mooncake" if text.lstrip().startswith("{") else "burstgpt"
    if fmt == "mooncake":
        rows, skipped = _mooncake(text, name), 0
    elif fmt == "burstgpt":
        rows, skipped = _burstgpt(text, name)
    else:
        raise ConfigError(f"--trace-format: {fmt!r} is not one of auto, mooncake, burstgpt")
    if not rows:
        raise ConfigError(f"--trace: {name}: no requests in the trace")
    rows.sort(key=lambda r: r[0])
    t0 = rows[0][0]
    return Trace(fmt, tuple(TraceRow(at - t0, i, o, h) for at, i, o, h in rows), skipped)


_Raw = tuple[float, int, int, tuple[int, ...]]


def _mooncake(text: str, name: str) -> list[_Raw]:
    rows: list[_Raw] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"--trace: {name}:{lineno}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{where}: not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise ConfigError(f"{where}: expected an object with timestamp, input_length, output_length")
        at_ms = _number(obj.get("timestamp"), f"{where}: timestamp")
        inp = _length(obj.get("input_length"), f"{where}: input_length")
        out = _length(obj.get("output_length"), f"{where}: output_length")
        hashes = obj.get("hash_ids", [])
        if not isinstance(hashes, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in hashes):
            raise ConfigError(f"{where}: hash_ids: must be a list of integers")
        rows.append((at_ms / 1000.0, inp, out, tuple(hashes)))
        _bounded(rows, where)
    return rows


def _burstgpt(text: str, name: str) -> tuple[list[_Raw], int]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header[: len(BURSTGPT_COLUMNS)]) != BURSTGPT_COLUMNS:
        raise ConfigError(f"--trace: {name}:1: expected the BurstGPT header {','.join(BURSTGPT_COLUMNS)}")
    rows: list[_Raw] = []
    skipped = 0
    for fields in reader:
        where = f"--trace: {name}:{reader.line_num}"
        if not fields or not "".join(fields).strip():
            continue
        if len(fields) < len(BURSTGPT_COLUMNS):
            raise ConfigError(f"{where}: expected {len(BURSTGPT_COLUMNS)} columns, got {len(fields)}")
        at_s = _number(_parsed_float(fields[0], f"{where}: Timestamp"), f"{where}: Timestamp")
        inp = _length(_parsed_int(fields[2], f"{where}: Request tokens"), f"{where}: Request tokens", zero=True)
        out = _length(_parsed_int(fields[3], f"{where}: Response tokens"), f"{where}: Response tokens", zero=True)
        if out == 0 or inp == 0:
            skipped += 1  # failed in the original service: nothing to replay
            continue
        rows.append((at_s, inp, out, ()))
        _bounded(rows, where)
    return rows, skipped


def _bounded(rows: list[_Raw], where: str) -> None:
    if len(rows) > MAX_TRACE_ROWS:
        raise ConfigError(f"{where}: more than {MAX_TRACE_ROWS} requests; cut the trace")


def _parsed_float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{what}: {text.strip()[:40]!r} is not a number") from None


def _parsed_int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"{what}: {text.strip()[:40]!r} is not a whole number") from None


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 0:
        raise ConfigError(f"{what}: must be a number >= 0")
    if value == float("inf"):
        raise ConfigError(f"{what}: must be finite")
    return float(value)


def _length(value: Any, what: str, *, zero: bool = False) -> int:
    low = 0 if zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_LENGTH:
        raise ConfigError(f"{what}: must be a whole number from {low} to {MAX_LENGTH}")
    return value
