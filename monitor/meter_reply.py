"""What the events of one response added up to, and the ``StreamMeasurement`` made from it. Pure, no I/O.

``Reply`` is the stream meter's accumulator: every chunk is applied in arrival order with the time
of the read that completed it, the first failure is kept, and ``measurement`` turns it all into
numbers. The meter's hot path appends to ``text_parts``, ``token_ms`` and ``token_counts`` itself,
so these stay plain attributes. It never sees a stream's first content: that event taught the meter
its layout and went through ``apply``, which dates the answer (``answer_ms``).

A *token event* is one whose choice 0 carries a non-empty content (or completions text), a
non-empty reasoning string, or at least one tool-call fragment: each is made of generated tokens,
so each counts for ``ttft_ms`` and ``itl_ms``. Only content counts for ``ttfa_ms``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from itertools import islice

from monitor.meter_chunks import NO_USAGE, Chunk, ToolCallFragment, Usage, plausible
from monitor.meter_measurement import (
    ERROR_DETAIL_MAX_CHARS,
    MAX_REASONING_CHARS,
    MAX_TOOL_ARGUMENTS_CHARS,
    MAX_TOOL_CALLS,
    MAX_TOOL_FIELD_CHARS,
    Endpoint,
    MeterErrorKind,
    StreamMeasurement,
    ToolCall,
    estimate_tokens,
)
from monitor.untrusted import Untrusted

__all__ = ["Reply"]

# A server claiming absurd per-chunk token counts must not make us allocate gigabytes.
_MAX_EXACT_ITL_GAPS = 1 << 17


class _CallParts:
    """One tool call while its fragments arrive."""

    __slots__ = ("arguments", "id", "name", "type")

    def __init__(self, call_id: str | None, call_type: str | None, name: str | None) -> None:
        self.id, self.type, self.name = call_id, call_type, name
        self.arguments: list[str] = []


class Reply:
    """The content, reasoning, tool calls, timings, usage, finish and first failure of one response."""

    __slots__ = (
        "answer_ms", "calls", "calls_dropped", "error", "finish_reason", "reasoning_parts", "stop_reason",
        "text_parts", "token_counts", "token_ms", "tool_call_events", "untrusted", "usage",
    )  # fmt: skip

    def __init__(self, untrusted: Untrusted) -> None:
        self.untrusted = untrusted
        self.text_parts: list[str] = []  # the non-empty content strings, in order
        self.reasoning_parts: list[str] = []  # likewise the reasoning strings
        self.token_ms: list[float] = []  # when each token event arrived (perf_counter ms)
        # completion_tokens of the usage each token event carried; None once one carried none.
        self.token_counts: list[int] | None = []
        self.answer_ms: float | None = None  # when the first content arrived
        self.calls: dict[int, _CallParts] = {}  # tool calls by index
        self.calls_dropped = False  # fragments of a tool call past MAX_TOOL_CALLS came
        self.tool_call_events = 0
        self.usage: Usage | None = None  # the last non-null usage
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        self.error: tuple[MeterErrorKind, str] | None = None

    def apply(self, chunk: Chunk, now_s: float) -> None:
        """Add one chunk, completed by the read at ``now_s``."""
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.stop_reason is not None:
            self.stop_reason = chunk.stop_reason
        usage = chunk.usage
        if usage is not None:
            self.usage = usage
        content, reasoning, tool_calls = chunk.content, chunk.reasoning, chunk.tool_calls
        if not (content or reasoning or tool_calls):
            return
        now_ms = now_s * 1000.0
        if content:
            self.text_parts.append(content)
            if self.answer_ms is None:
                self.answer_ms = now_ms
        if reasoning:
            self.reasoning_parts.append(reasoning)
        if tool_calls:
            self.tool_call_events += 1
            self._add_tool_calls(tool_calls)
        self.token_ms.append(now_ms)
        counts = self.token_counts
        if counts is not None:
            if usage is None or usage[1] is None:
                self.token_counts = None
            else:
                counts.append(usage[1])

    def fail(self, kind: MeterErrorKind, detail: str) -> None:
        """Keep the first failure only, cleaned and cut to one line."""
        if self.error is None:
            self.error = (kind, self.untrusted.line(detail, ERROR_DETAIL_MAX_CHARS))

    def itl(self) -> tuple[tuple[float, ...], bool]:
        """The gaps between token events, split per token when per-chunk usage allows it."""
        times_ms, counts = self.token_ms, self.token_counts
        diffs = list(map(operator.sub, islice(times_ms, 1, None), times_ms))
        # Exact only if every token event carried usage (a plain hot layout appends no count).
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
        reasoning = clean("".join(self.reasoning_parts)) if self.reasoning_parts and not broken else ""
        tool_calls, tool_tokens, calls_cut = self._tool_calls(clean) if self.calls and not broken else ((), 0, False)
        times, start_ms = self.token_ms, start_s * 1000.0
        itl_ms, exact = self.itl() if sse else ((), False)
        prompt_tokens, completion_tokens, reasoning_tokens = map(plausible, self.usage or NO_USAGE)
        estimated = completion_tokens is None
        if completion_tokens is None:
            # One token per token event; a JSON body has no events, so its text is estimated.
            completion_tokens = len(times) if sse else estimate_tokens(text) + estimate_tokens(reasoning) + tool_tokens
        reasoning_estimated = reasoning_tokens is None
        if reasoning_tokens is None:
            reasoning_tokens = len(self.reasoning_parts) if sse else estimate_tokens(reasoning)
        kind, detail = self.error or (None, None)
        finish, stop = self.finish_reason, self.stop_reason
        answer_ms = self.answer_ms
        return StreamMeasurement(
            endpoint=endpoint,
            stream=stream,
            text=text,
            ttft_ms=times[0] - start_ms if sse and times else None,
            latency_ms=(now_s - start_s) * 1000.0,
            itl_ms=itl_ms,
            chunk_count=chunk_count,
            content_chunk_count=len(self.text_parts),
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
            ttfa_ms=answer_ms - start_ms if sse and answer_ms is not None else None,
            reasoning_text=reasoning[:MAX_REASONING_CHARS],
            reasoning_tokens=reasoning_tokens,
            reasoning_tokens_estimated=reasoning_estimated,
            reasoning_chunk_count=len(self.reasoning_parts),
            tool_calls=tool_calls,
            tool_call_chunk_count=self.tool_call_events,
            capped=len(reasoning) > MAX_REASONING_CHARS or calls_cut or self.calls_dropped,
        )

    def _add_tool_calls(self, fragments: tuple[ToolCallFragment, ...]) -> None:
        calls = self.calls
        for index, call_id, call_type, name, arguments in fragments:
            call = calls.get(index)
            if call is None:
                if len(calls) >= MAX_TOOL_CALLS:
                    self.calls_dropped = True
                    continue
                call = calls[index] = _CallParts(call_id, call_type, name)
            else:  # vLLM names a call in its first fragment only: the first non-empty value wins
                if not call.id and call_id:
                    call.id = call_id
                if not call.type and call_type:
                    call.type = call_type
                if not call.name and name:
                    call.name = name
            if arguments:
                call.arguments.append(arguments)

    def _tool_calls(self, clean: Callable[[str], str]) -> tuple[tuple[ToolCall, ...], int, bool]:
        """The assembled tool calls by index, their estimated tokens, and whether a field was cut."""
        calls: list[ToolCall] = []
        tokens, cut = 0, False

        def field(value: str | None) -> str | None:
            nonlocal cut
            if value is None:
                return None
            value = clean(value)
            cut = cut or len(value) > MAX_TOOL_FIELD_CHARS
            return value[:MAX_TOOL_FIELD_CHARS]

        for index in sorted(self.calls):
            parts = self.calls[index]
            arguments = clean("".join(parts.arguments))
            name = field(parts.name)
            tokens += estimate_tokens(arguments) + estimate_tokens(name or "")
            cut = cut or len(arguments) > MAX_TOOL_ARGUMENTS_CHARS
            calls.append(
                ToolCall(index, field(parts.id), field(parts.type), name, arguments[:MAX_TOOL_ARGUMENTS_CHARS])
            )
        return tuple(calls), tokens, cut
