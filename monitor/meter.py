"""Sans-IO stream meter: response bytes plus timestamps in, a StreamMeasurement out.

STUB: the interface is fixed; the implementation is being written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Endpoint = Literal["chat", "completion"]
MeterErrorKind = Literal["bad_response", "stream_error"]


@dataclass(frozen=True, slots=True)
class StreamMeasurement:
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


class StreamMeter:
    def __init__(self, endpoint: Endpoint, *, stream: bool, start_s: float) -> None:
        raise NotImplementedError

    def feed(self, data: bytes, now_s: float) -> None:
        raise NotImplementedError

    def finish(self, now_s: float) -> StreamMeasurement:
        raise NotImplementedError
