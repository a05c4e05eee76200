"""What the events of one response added up to, and the ``StreamMeasurement`` made from it. Pure, no I/O.

``Reply`` is the stream meter's accumulator: every chunk is applied in arrival order with the time
of the read that completed it, the first failure is kept, and ``measurement`` turns it all into
numbers. The meter's hot path appends to ``text_parts``, ``content_ms`` and ``content_counts``
itself, so these stay plain lists.
"""

from __future__ import annotations

import operator
from itertools import islice

from monitor.meter_chunks import Chunk, Usage, plausible
from monitor.meter_measurement import (
    ERROR_DETAIL_MAX_CHARS,
    Endpoint,
    MeterErrorKind,
    StreamMeasurement,
    estimate_tokens,
)
from monitor.untrusted import Untrusted

__all__ = ["Reply"]

# A server claiming absurd per-chunk token counts must not make us allocate gigabytes.
_MAX_EXACT_ITL_GAPS = 1 << 17


class Reply:
    """The content, timings, usage, finish and first failure of one response."""

    __slots__ = (
        "content_counts", "content_ms", "error", "finish_reason", "stop_reason", "text_parts", "untrusted", "usage",
    )  # fmt: skip

    def __init__(self, untrusted: Untrusted) -> None:
        self.untrusted = untrusted
        self.text_parts: list[str] = []  # the non-empty content strings, in order
        self.content_ms: list[float] = []  # when each of them arrived (perf_counter ms)
        # completion_tokens of the usage each content event carried; None once one carried none.
        self.content_counts: list[int] | None = []
        self.usage: Usage | None = None  # the last non-null usage
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        self.error: tuple[MeterErrorKind, str] | None = None

    def apply(self, chunk: Chunk, now_s: float) -> None:
        """Add one chunk, completed by the read at ``now_s``."""
        content = chunk.content
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.stop_reason is not None:
            self.stop_reason = chunk.stop_reason
        usage = chunk.usage
        if usage is not None:
            self.usage = usage
        if content:
            self.text_parts.append(content)
            self.content_ms.append(now_s * 1000.0)
            counts = self.content_counts
            if counts is not None:
                if usage is None or usage[1] is None:
                    self.content_counts = None
                else:
                    counts.append(usage[1])

    def fail(self, kind: MeterErrorKind, detail: str) -> None:
        """Keep the first failure only, cleaned and cut to one line."""
        if self.error is None:
            self.error = (kind, self.untrusted.line(detail, ERROR_DETAIL_MAX_CHARS))

    def itl(self) -> tuple[tuple[float, ...], bool]:
        """The gaps between content events, split per token when per-chunk usage allows it."""
        times_ms, counts = self.content_ms, self.content_counts
        diffs = list(map(operator.sub, islice(times_ms, 1, None), times_ms))
        # Exact only if every content event carried usage (a plain hot layout appends no count).
        if not counts or len(counts) != len(times_ms) or counts[-1] - counts[0] > _MAX_EXACT_ITL_GAPS:
            return tuple(diffs), False
        steps = list(map(operator.sub, islice(counts, 1, None), counts))
        if min(steps, default=1) <= 0:
            return tuple(diffs), False
        if max(steps, default=1) == 1:  # one token per event, the usual case: x / 1 == x
            return tuple(diffs), True
        gaps: list[float] = []
        for gap, k in zip(diffs, steps, strict=True):
            gaps.extend([gap / k] * k)
        return tuple(gaps), True

    def measurement(
        self,
        *,
        endpoint: Endpoint,
        stream: bool,
        sse: bool,
        start_s: float,
        now_s: float,
        chunk_count: int,
        done_seen: bool,
        broken: bool = False,
    ) -> StreamMeasurement:
        """The measurement; ``sse`` says the body was an event stream, ``broken`` that the meter failed."""
        clean = self.untrusted.text
        text = "" if broken else clean("".join(self.text_parts))
        times = self.content_ms
        itl_ms, exact = self.itl() if sse else ((), False)
        prompt_tokens, completion_tokens = (plausible(n) for n in self.usage or (None, None))
        estimated = completion_tokens is None
        if completion_tokens is None:
            completion_tokens = len(times) if sse else estimate_tokens(text)
        kind, detail = self.error or (None, None)
        finish, stop = self.finish_reason, self.stop_reason
        return StreamMeasurement(
            endpoint=endpoint,
            stream=stream,
            text=text,
            ttft_ms=times[0] - start_s * 1000.0 if sse and times else None,
            latency_ms=(now_s - start_s) * 1000.0,
            itl_ms=itl_ms,
            chunk_count=chunk_count,
            content_chunk_count=len(times),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            tokens_estimated=estimated,
            itl_per_token_exact=exact,
            finish_reason=None if finish is None else clean(finish),
            stop_reason=clean(stop) if isinstance(stop, str) else stop,
            done_seen=done_seen,
            error_kind=kind,
            error_detail=detail,
            sanitised=self.untrusted.sanitised,
        )
