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
    "ERROR_DETAIL_MAX_CHARS", "MAX_EVENT_BYTES", "MAX_REASONING_CHARS", "MAX_TOKEN_COUNT", "MAX_TOOL_ARGUMENTS_CHARS",
    "MAX_TOOL_CALLS", "MAX_TOOL_FIELD_CHARS", "Endpoint", "MeterErrorKind", "StreamMeasurement", "ToolCall",
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
# Caps on what a measurement keeps of the reasoning and the tool calls (the reply text has none: the
# reader's max_body_bytes bounds it). They are cut after monitor.untrusted cleaned the whole string.
MAX_REASONING_CHARS = 64 * 1024
MAX_TOOL_CALLS = 128  # distinct tool-call indices; fragments of further ones are dropped
MAX_TOOL_ARGUMENTS_CHARS = 64 * 1024
MAX_TOOL_FIELD_CHARS = 256  # id, type and function name


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call of choice 0, assembled from its streamed fragments (or read from ``message.tool_calls``)."""

    index: int  # the fragments' "index" (non-streamed: the position in the list)
    id: str | None  # the first non-empty string the server sent for it; None if it sent none
    type: str | None  # likewise ("function" from vLLM)
    name: str | None  # function.name, likewise
    arguments: str  # every function.arguments fragment, joined in arrival order (JSON text, not parsed)


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
    # Reasoning models and tool calls (see monitor.meter). The defaults describe a reply with neither.
    ttfa_ms: float | None = None
    reasoning_text: str = ""
    reasoning_tokens: int = 0
    reasoning_tokens_estimated: bool = True
    reasoning_chunk_count: int = 0
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_chunk_count: int = 0
    capped: bool = False  # reasoning_text or a tool call was cut to the caps above, or tool calls were dropped


_CJK = re.compile("[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0003134f]")


def estimate_tokens(text: str) -> int:
    """Rough token count: each CJK character is one token, other runs ~4 characters per token."""
    tokens = other = 0
    for run in _CJK.split(text):
        if run:
            other += len(run)
            tokens += -(-len(run) // 4)
    return tokens + len(text) - other
