"""Sans-IO stream meter: response bytes plus timestamps in, a StreamMeasurement out.

Probes (aiohttp) and Locust users both feed a ``StreamMeter`` the raw body bytes of one
OpenAI-compatible response, each read stamped with ``time.perf_counter()``, so every number
below means the same thing wherever it was measured. Only choice index 0 is measured. An event
is dated by the read that completed it; events of one read share a time, so a zero gap is a true
observation. A *token event* carries, in choice 0, non-empty ``content`` (``text`` on
/v1/completions), a non-empty ``reasoning``/``reasoning_content``, or a ``tool_calls`` fragment.

* ``ttft_ms``: ``start_s`` (request sent) to the first token event of any kind. The role chunk
  (``"content":""``), empty deltas and usage-only chunks never count. Non-streaming: None.
* ``ttfa_ms``: to the first event with content, the answer; None if none came (reasoning cut by
  ``length``, only tool calls) and for non-streaming. It equals ``ttft_ms`` unless the model first
  reasons or calls a tool, so always on /v1/completions.
* ``itl_ms``: gaps between consecutive token events, reasoning and tool-call ones included: they
  are generated tokens, and without them a stall in the thinking would hide in one big gap before
  the answer. When every token event carries ``continuous_usage_stats`` usage, one with k new
  tokens counts as k gaps of gap/k (``itl_per_token_exact``); otherwise one gap per event.
* Tokens come from the last non-null ``usage``: ``prompt_tokens``, ``completion_tokens`` (reasoning
  included, as servers count it) and ``reasoning_tokens`` from its
  ``completion_tokens_details.reasoning_tokens``. A count the server did not send is estimated and
  flagged (``tokens_estimated``, ``reasoning_tokens_estimated``): a stream counts one token per token
  event (reasoning: per reasoning event), a JSON body applies ``estimate_tokens`` to its text
  (reasoning, tool calls). Estimates never include the EOS token that servers count.
* ``text`` and ``reasoning_text`` join the content and the reasoning strings; ``tool_calls`` holds
  one ``ToolCall`` per fragment ``index``, sorted: the first non-empty id, type and name sent for
  it, and its arguments joined. ``chunk_count`` counts SSE data events other than ``[DONE]`` (1 for
  a JSON body); ``content_chunk_count``, ``reasoning_chunk_count`` and ``tool_call_chunk_count`` the
  events carrying each (one with two counts twice). ``finish_reason`` ``"tool_calls"`` is a
  normal finish; ``ended_without_finish`` ([DONE] with no finish at all) is the abort.

Other tools draw the TTFT line elsewhere, so compare like with like:

=================  =============================================  ==================  =========================
tool               time to first token                            first answer token  inter-token latency
=================  =============================================  ==================  =========================
vLLM bench serve   first event with a non-empty ``choices``       --                  every later such event
                   list, whatever it carries (role chunk too)
GuideLLM           first line its handler counts tokens in        TTFOT (newer):      mean: (last - first token
                   (content, tool calls; reasoning since #737)    first content       time) / (tokens - 1)
AIPerf             first non-empty response (content or           TTFO: first non-    mean over OSL (output +
                   reasoning)                                     empty content       reasoning tokens); ICL
this meter         first token event (content, reasoning, tool    ``ttfa_ms``         every token-event gap
                   call)                                                              (per token if exact)
=================  =============================================  ==================  =========================

Failures never raise. The first one is kept in ``error_kind``/``error_detail``:
``stream_error`` for an error event inside an SSE stream (either vLLM envelope, read by
``monitor.envelope``), and ``bad_response`` for malformed JSON, invalid UTF-8, an empty stream, or
a JSON error body in a 200 response. Events after a malformed one are still measured, so the
measurement shows how much of the reply got through. An event still open at ``finish`` is parsed
anyway and dated by the last read, so a cut-off stream ends in a malformed-JSON error. A
``stream=True`` body with no ``data:`` line that is a JSON object (a server that ignored
``stream``) is measured like a non-streaming reply. One JSON document (an SSE event, or the whole
body) past ``MAX_EVENT_BYTES`` is a ``bad_response`` and is never parsed; the events after it still are.

The meter is where server text enters: the reply and reasoning text, tool-call fields,
``finish_reason``, ``stop_reason`` and every error detail pass through the request's
``monitor.untrusted.Untrusted`` (lone surrogates and NUL become U+FFFD, the API key ``[redacted]``)
before anything cuts them (reasoning and tool calls to the caps in ``monitor.meter_measurement``,
which set ``capped``); ``sanitised`` says that characters were replaced.

Locust feeds thousands of streams per second per core, so the common vLLM chunk shapes
take a fast path (``monitor.meter_layout``): the first content event of each layout is fully
parsed, and later events that differ only in the content string and the per-chunk usage
numbers are read from those slots. Anything unusual goes through ``json.loads``; both paths
give identical measurements (see tests/test_meter.py).

The meter is five small modules: this one (``StreamMeter``: events to chunks, the fast path),
``meter_sse`` (reads to complete SSE events), ``meter_chunks`` (JSON to ``Chunk``), ``meter_reply``
(chunks to numbers) and ``meter_measurement`` (``StreamMeasurement`` and the limits).
"""

from __future__ import annotations

import logging
import re
from _json import scanstring

from monitor.envelope import ABORTED_STREAM_DETAIL, envelope_message
from monitor.meter_chunks import Chunk, Failure, parse_chunk, read_body, read_event
from monitor.meter_layout import COLD, Layout, find_string, learn_layout
from monitor.meter_measurement import (
    ERROR_DETAIL_MAX_CHARS,
    MAX_EVENT_BYTES,
    Endpoint,
    MeterErrorKind,
    StreamMeasurement,
    ToolCall,
    estimate_tokens,
)
from monitor.meter_reply import Reply
from monitor.meter_sse import EventFramer, data_field, is_done
from monitor.untrusted import Untrusted

__all__ = [
    "ERROR_DETAIL_MAX_CHARS", "MAX_EVENT_BYTES", "Endpoint", "MeterErrorKind", "StreamMeasurement", "StreamMeter",
    "ToolCall", "estimate_tokens",
]  # fmt: skip

logger = logging.getLogger(__name__)

_PREVIEW_CHARS = 80
_FINISHED = re.compile(rb'_reason"\s*:\s*"')  # a finish_reason or stop_reason string


class StreamMeter(EventFramer):
    """Measures one response. Feed every read with its timestamp, then call ``finish`` once."""

    # Each attempt costs one json.loads, the same as parsing the event; vLLM needs one or two.
    _LEARN_ATTEMPTS = 4

    __slots__ = (
        "_add_reasoning", "_add_text", "_add_time", "_done_seen", "_endpoint", "_event_count", "_finalized", "_hot",
        "_layouts", "_learn_budget", "_reply", "_start_s", "_stream", "_text_marker", "_untrusted",
    )  # fmt: skip

    def __init__(self, endpoint: Endpoint, *, stream: bool, start_s: float, untrusted: Untrusted | None = None) -> None:
        super().__init__(stream=stream, start_s=start_s)
        self._endpoint: Endpoint = endpoint
        # Shared with the caller, which cleans the request's other server text (error bodies) with it.
        self._untrusted = untrusted if untrusted is not None else Untrusted()
        self._reply = Reply(self._untrusted)
        # The hot path's appends, bound once per stream instead of once per read.
        self._add_text, self._add_reasoning = self._reply.text_parts.append, self._reply.reasoning_parts.append
        self._add_time = self._reply.token_ms.append
        self._stream = stream
        self._start_s = start_s
        self._text_marker = b'"content":"' if endpoint == "chat" else b'"text":"'  # where _learn looks
        self._layouts: list[Layout] = []
        self._hot = COLD  # the latest plain layout (see Layout.hot) that matched a second event
        self._learn_budget = self._LEARN_ATTEMPTS
        self._event_count = 0  # SSE data events other than [DONE]: chunk_count
        self._done_seen = False
        self._finalized = False

    @property
    def ended_without_finish(self) -> bool:
        """[DONE] arrived but no choice ever finished: the server aborted the request."""
        return self._done_seen and self._reply.finish_reason is None

    @property
    def token_events(self) -> int:
        """Token events measured so far: a caller that feeds a read in parts learns which part completed which."""
        return len(self._reply.token_ms)

    def finish(self, now_s: float) -> StreamMeasurement:
        """Parse what is left and return the measurement; ``latency_ms`` ends at ``now_s``."""
        try:
            if not self._finalized:
                self._finalized = True
                self._finalize()
            return self._measurement(now_s)
        except Exception as exc:  # same reason as in feed()
            self._internal_error("at finish", exc)
            return self._measurement(now_s, broken=True)

    def _internal_error(self, where: str, exc: Exception) -> None:
        logger.exception("stream meter failed %s", where)
        self._reply.fail("bad_response", f"meter internal error: {exc!r}")

    def _scan(self, data: bytes, now_s: float) -> bytes:
        """Dispatch the complete events in ``data`` and return the unfinished rest.

        This runs once per token, so events of the hot layout are matched in place, without
        splitting ``data`` first; any other event goes through ``_event``.
        """
        reply, add_time, now_ms = self._reply, self._add_time, now_s * 1000.0
        escapes = 0x5C in data  # one memchr per read spares most events a check of their own
        # A hot event is one JSON document too: the same cap as on the slow path (+ 2: its blank line).
        limit = MAX_EVENT_BYTES + 2
        pos = 0
        while True:  # once per hot layout: an event off the fast path may promote another one
            hot = self._hot
            (pre, match_rest, pre_len, prompt_group, completion_group, reasoning_group,
             prompt_tokens, reasoning_tokens, feeds_reasoning) = hot  # fmt: skip
            add_part = self._add_reasoning if feeds_reasoning else self._add_text
            counts = reply.token_counts
            hits = 0
            while True:
                hit = match_rest(data, pos + pre_len) if data.startswith(pre, pos) else None
                if hit is not None and (hit_end := hit.end()) - pos <= limit:
                    string_body = hit[1]
                    try:  # meter_layout.read_string, inlined
                        if escapes and 0x5C in string_body:
                            content = scanstring((string_body + b'"').decode(), 0)[0]
                        else:
                            content = string_body.decode()
                    except UnicodeDecodeError:
                        pass  # the slow path reports it
                    else:
                        hits += 1
                        if completion_group:  # continuous_usage_stats: Reply.apply, inlined
                            completion = int(hit[completion_group])
                            reply.usage = (
                                int(hit[prompt_group]) if prompt_group else prompt_tokens,
                                completion,
                                int(hit[reasoning_group]) if reasoning_group else reasoning_tokens,
                            )
                            if content and counts is not None:
                                counts.append(completion)
                        if content:
                            add_part(content)
                            add_time(now_ms)
                        pos = hit_end
                        continue
                self._event_count += hits  # keeps event numbers in error details right
                hits = 0
                end = data.find(b"\n\n", pos)
                if end < 0:
                    return data[pos:] if pos else data
                self._off_path(data, pos, end, now_s)
                counts = reply.token_counts  # the slow path may have given up on exact counts
                pos = end + 2
                if self._hot is not hot:
                    break  # the rest of this read is matched with the layout just promoted

    def _off_path(self, data: bytes, start: int, end: int, now_s: float) -> None:
        """The event at ``data[start:end]``, which the hot layout did not match."""
        if end - start > MAX_EVENT_BYTES:
            self._oversized()
        else:
            self._event(data[start:end], now_s)

    def _oversized(self) -> None:
        self._event_count += 1
        self._raw_reads = None
        self._reply.fail(
            "bad_response", f"SSE event {self._event_count} exceeds {MAX_EVENT_BYTES} bytes; dropped unparsed"
        )

    def _event(self, block: bytes, now_s: float) -> None:
        """One complete event (without its blank line), completed by the read at ``now_s``."""
        payload: bytes | None
        single = block[:5] == b"data:" and b"\n" not in block  # what vLLM sends: one data line
        if single:
            if self._layouts and self._match(block, now_s):
                return
            payload = block[6:] if block[5:6] == b" " else block[5:]
        else:
            payload = data_field(block)
        if not payload:
            return
        self._raw_reads = None
        if is_done(payload):
            self._done_seen = True
            return
        if single and self._learn_budget and self._learn(block) and self._match(block, now_s, learnt=True):
            return
        self._event_count += 1
        self._apply(read_event(payload, self._endpoint, self._event_count, self._untrusted), now_s)

    def _match(self, block: bytes, now_s: float, *, learnt: bool = False) -> bool:
        for layout in self._layouts:
            chunk = layout.read(block) if block.startswith(layout.pre) else None
            if chunk is not None:
                self._event_count += 1
                self._reply.apply(chunk, now_s)
                if layout.hot:
                    # Compile only for a layout seen twice (or in an earlier stream), not for one
                    # whose bytes vary per event, such as a random per-chunk field.
                    self._promote(layout, cached_only=learnt)
                return True
        return False

    def _promote(self, layout: Layout, *, cached_only: bool) -> None:
        hot = layout.hot_layout(cached_only=cached_only)
        if hot is not None:
            self._hot = hot

    def _learn(self, block: bytes) -> bool:
        """Learn this event's layout (see ``monitor.meter_layout``), so later events skip ``json.loads``."""
        slot = find_string(block, self._text_marker)
        if slot is None and self._endpoint == "chat":  # a reasoning model's thinking: vLLM's name, then the old one
            slot = find_string(block, b'"reasoning":"') or find_string(block, b'"reasoning_content":"')
        # Role and finish chunks come once per stream: not worth a layout. Most have empty content.
        if slot is None or _FINISHED.search(block) is not None:
            return False
        self._learn_budget -= 1
        layout = learn_layout(block, *slot, self._interpret)
        if layout is None:
            return False
        self._layouts.append(layout)
        return True

    def _interpret(self, obj: object) -> Chunk | None:
        chunk = parse_chunk(obj, self._endpoint)
        return chunk if isinstance(chunk, Chunk) and envelope_message(obj) is None else None

    def _finalize(self) -> None:
        fail = self._reply.fail
        if self._body_mode:
            if self._pending_bytes > MAX_EVENT_BYTES:
                fail("bad_response", f"response body of {self._pending_bytes} bytes exceeds {MAX_EVENT_BYTES} bytes")
                return
            self._measure_body(b"".join(self._pending))
            return
        # A final event without its blank line (or even its newline) is still parsed;
        # a cut-off one then shows up as malformed JSON.
        for block in self._unfinished_blocks():
            if len(block) > MAX_EVENT_BYTES and not self._maybe_json_body(block):
                self._oversized()
            else:
                self._event(block, self._last_s)
        if self._event_count or self._done_seen:
            if not self._event_count:
                fail("bad_response", "empty stream: only [DONE]")
            elif self.ended_without_finish and not self._reply.token_ms:
                # [DONE] after the role chunk, nothing generated and nothing finished: the server aborted
                # the request (llama-cpp-python's interrupt, which closes cleanly since sse-starlette 3).
                # A stream that generated text but sent no finish_reason is tolerated, as before.
                fail("stream_error", ABORTED_STREAM_DETAIL)
            return
        body = b"".join(self._raw_reads or ())
        if body.lstrip()[:1] == b"{":  # a server that ignored "stream": true
            self._body_mode = True
            if len(body) > MAX_EVENT_BYTES:
                fail("bad_response", f"response body of {len(body)} bytes exceeds {MAX_EVENT_BYTES} bytes")
            else:
                self._measure_body(body)
        elif body.strip():
            fail("bad_response", f"no SSE data events in stream body: {self._untrusted.preview(body, _PREVIEW_CHARS)}")
        else:
            fail("bad_response", "empty stream")

    def _measure_body(self, body: bytes) -> None:
        self._event_count = int(bool(body.strip()))  # a JSON body is one event, unless there is none
        self._apply(read_body(body, self._endpoint), self._last_s)

    def _apply(self, chunk: Chunk | Failure, now_s: float) -> None:
        if isinstance(chunk, Chunk):
            self._reply.apply(chunk, now_s)
        else:
            self._reply.fail(*chunk)

    def _measurement(self, now_s: float, *, broken: bool = False) -> StreamMeasurement:
        return self._reply.measurement(
            endpoint=self._endpoint,
            stream=self._stream,
            sse=not self._body_mode,
            start_s=self._start_s,
            now_s=now_s,
            chunk_count=self._event_count,
            done_seen=self._done_seen,
            broken=broken,
        )
