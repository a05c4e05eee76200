"""What the stream meter returns (``StreamMeasurement``) and the limits behind its numbers. Pure, no I/O.

``monitor.meter`` documents what each field means; the probes, the checks, the store and the
Locust users read the measurement, so this module imports nothing but ``monitor.untrusted``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from monitor.untrusted import MAX_DETAIL_CHARS

__all__ = [
    "ERROR_DETAIL_MAX_CHARS", "MAX_EVENT_BYTES", "MAX_TOKEN_COUNT", "Endpoint", "MeterErrorKind", "StreamMeasurement",
    "estimate_tokens",
]  # fmt: skip

Endpoint = Literal["chat", "completion"]
MeterErrorKind = Literal["bad_response", "stream_error"]

ERROR_DETAIL_MAX_CHARS = MAX_DETAIL_CHARS
# The largest JSON document parsed: one SSE event (a token delta, a few hundred bytes) or a whole JSON
# reply (4 MiB is ~1M tokens). A bigger one is reported unparsed (bad_response), so one hostile line
# cannot cost a json.loads of max_body_bytes, plus the checks on its text, while other probes wait.
MAX_EVENT_BYTES = 4 << 20
# Usage numbers beyond this are a broken server, not a count: they are treated as not reported.
MAX_TOKEN_COUNT = 2**31 - 1


@dataclass(frozen=True, slots=True)
class StreamMeasurement:
    """What one response looked like on the wire; see ``monitor.meter`` for the contract."""

    endpoint: Endpoint
    stream: bool
    text: str
    ttft_ms: float | None
    latency_ms: float
    itl_ms: tuple[float, ...]
    chunk_count: int
    content_chunk_count: int
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_estimated: bool
    itl_per_token_exact: bool
    finish_reason: str | None
    stop_reason: str | int | None
    done_seen: bool
    error_kind: MeterErrorKind | None
    error_detail: str | None
    sanitised: bool = False  # characters the server sent were replaced (see monitor.untrusted)


_CJK = re.compile("[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0003134f]")


def estimate_tokens(text: str) -> int:
    """Rough token count: each CJK character is one token, other runs ~4 characters per token."""
    tokens = other = 0
    for run in _CJK.split(text):
        if run:
            other += len(run)
            tokens += -(-len(run) // 4)
    return tokens + len(text) - other
