"""Sans-IO stream meter: response bytes plus timestamps in, a StreamMeasurement out.

Probes (aiohttp) and Locust users both feed a ``StreamMeter`` the raw body bytes of one
OpenAI-compatible response, each read stamped with ``time.perf_counter()``, so every
number below means the same thing wherever it was measured:

* ``ttft_ms``: from ``start_s`` (request sent) to the read that completed the first SSE event
  whose choice-0 content is non-empty. The role chunk (``"content":""``), empty deltas,
  tool-call deltas and ``reasoning_content`` never count. Non-streaming: ``None``.
* ``itl_ms``: gaps between consecutive content-bearing events. Events that arrived in the
  same read share a timestamp, so a zero gap is a true observation, not a bug. When every
  content event carries ``continuous_usage_stats`` usage, an event with k new tokens counts
  as k gaps of gap/k (``itl_per_token_exact``); otherwise one gap per event.
* Tokens come from the last non-null ``usage`` the server sent. Without one, a stream
  counts one token per content event and a plain JSON body uses ``estimate_tokens``; both
  set ``tokens_estimated``. The estimate never includes the EOS token that servers count.
* Only choice index 0 is measured; other choices are ignored. ``chunk_count`` counts SSE
  data events other than ``[DONE]`` (1 for a JSON body).

Failures never raise. The first one is kept in ``error_kind``/``error_detail``:
``stream_error`` for an error event inside an SSE stream (either vLLM envelope), and
``bad_response`` for malformed JSON, invalid UTF-8, an empty stream, or a JSON error body
in a 200 response. Events after a malformed one are still measured, so the measurement shows
how much of the reply got through. An event still open at ``finish`` is parsed anyway and
dated by the last read, so a cut-off stream ends in a malformed-JSON error. A ``stream=True``
body with no ``data:`` line that is a JSON object (a server that ignored ``stream``) is
measured like a non-streaming reply (``ttft_ms`` None). One JSON document (an SSE event, or the whole
body) past ``MAX_EVENT_BYTES`` is a ``bad_response`` and is never parsed; the events after it still are.

The meter is where server text enters: the reply text, ``finish_reason``, ``stop_reason`` and
every error detail pass through the request's ``monitor.untrusted.Untrusted`` (lone surrogates and
NUL become U+FFFD, the API key ``[redacted]``) before anything truncates them; ``sanitised`` says
that characters were replaced.

Locust feeds thousands of streams per second per core, so the common vLLM chunk shapes
take a fast path (``monitor.meter_layout``): the first content event of each layout is fully
parsed, and later events that differ only in the content string and the per-chunk usage
numbers are read from those slots. Anything unusual goes through ``json.loads``; both paths
give identical measurements (see tests/test_meter.py).
"""

from __future__ import annotations

import json
import logging
import operator
import re
from _json import scanstring
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal

from monitor.envelope import envelope_message
from monitor.meter_layout import Chunk as _Chunk, Layout, Usage as _Usage, find_string, learn_layout
from monitor.untrusted import MAX_DETAIL_CHARS, Untrusted

__all__ = ["MAX_EVENT_BYTES", "Endpoint", "MeterErrorKind", "StreamMeasurement", "StreamMeter", "estimate_tokens"]

logger = logging.getLogger(__name__)

Endpoint = Literal["chat", "completion"]
MeterErrorKind = Literal["bad_response", "stream_error"]

ERROR_DETAIL_MAX_CHARS = MAX_DETAIL_CHARS
_PREVIEW_CHARS = 80
# The largest JSON document parsed: one SSE event (a token delta, a few hundred bytes) or a whole JSON
# reply (4 MiB is ~1M tokens). A bigger one is reported unparsed (bad_response), so one hostile line
# cannot cost a json.loads of max_body_bytes, plus the checks on its text, while other probes wait.
MAX_EVENT_BYTES = 4 << 20
# Usage numbers beyond this are a broken server, not a count: they are treated as not reported.
MAX_TOKEN_COUNT = 2**31 - 1


@dataclass(frozen=True, slots=True)
class StreamMeasurement:
    """What one response looked like on the wire; see the module docstring for the contract."""

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


# The hot layout, unpacked for _scan: pre, rest.match, len(pre), prompt and completion groups,
# and the constant prompt_tokens when only completion_tokens has a slot.
_Hot = tuple[bytes, Callable[[bytes, int], re.Match[bytes] | None], int, int, int, int | None]
_COLD: _Hot = (b"", re.compile(b"(?!)").match, 0, 0, 0, None)  # before a layout is learned: never matches
_FINISHED = re.compile(rb'_reason"\s*:\s*"')  # a finish_reason or stop_reason string
_CJK = re.compile("[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0003134f]")
# A server claiming absurd per-chunk token counts must not make us allocate gigabytes.
_MAX_EXACT_ITL_GAPS = 1 << 17


def estimate_tokens(text: str) -> int:
    """Rough token count: each CJK character is one token, other runs ~4 characters per token."""
    tokens = other = 0
    for run in _CJK.split(text):
        if run:
            other += len(run)
            tokens += -(-len(run) // 4)
    return tokens + len(text) - other


class StreamMeter:
    """Measures one response. Feed every read with its timestamp, then call ``finish`` once."""

    # Each attempt costs one json.loads, the same as parsing the event; vLLM needs one or two.
    _LEARN_ATTEMPTS = 4

    __slots__ = (
        "_endpoint", "_stream", "_start_s", "_last_s", "_text_marker", "_layouts", "_hot", "_learn_budget",
        "_pending", "_pending_bytes", "_held_cr", "_dropping", "_raw_reads", "_text_parts", "_content_ms",
        "_content_counts", "_event_count", "_done_seen", "_finish_reason", "_stop_reason", "_usage", "_error",
        "_body_mode", "_finalized", "_untrusted",
    )  # fmt: skip

    def __init__(self, endpoint: Endpoint, *, stream: bool, start_s: float, untrusted: Untrusted | None = None) -> None:
        self._endpoint: Endpoint = endpoint
        # Shared with the caller, which cleans the request's other server text (error bodies) with it.
        self._untrusted = untrusted if untrusted is not None else Untrusted()
        self._stream = stream
        self._start_s = start_s
        self._last_s = start_s
        self._text_marker = b'"content":"' if endpoint == "chat" else b'"text":"'  # where _learn looks
        self._layouts: list[Layout] = []
        self._hot: _Hot = _COLD  # the latest plain layout (see Layout.hot) that matched a second event
        self._learn_budget = self._LEARN_ATTEMPTS
        self._pending: list[bytes] = []  # non-stream: the body; stream: bytes of an unfinished event
        self._held_cr = False  # a read ended in "\r": it may be half of "\r\n"
        self._pending_bytes = 0  # stream: len(b"".join(self._pending))
        self._dropping: bytes | None = None  # dropping an oversized event: its last byte seen so far
        self._raw_reads: list[bytes] | None = []  # kept until the first data event, for the plain-JSON fallback
        self._text_parts: list[str] = []
        self._content_ms: list[float] = []
        self._content_counts: list[int] | None = []
        self._event_count = 0
        self._done_seen = False
        self._finish_reason: str | None = None
        self._stop_reason: str | int | None = None
        self._usage: _Usage | None = None
        self._error: tuple[MeterErrorKind, str] | None = None
        self._body_mode = not stream
        self._finalized = False

    @property
    def ended_without_finish(self) -> bool:
        """[DONE] arrived but no choice ever finished: the server aborted the request."""
        return self._done_seen and self._finish_reason is None

    def feed(self, data: bytes, now_s: float) -> None:
        """Add one read of the body; never raises. Events completed by this read get ``now_s``."""
        try:
            self._last_s = now_s
            if self._body_mode:
                self._pending_bytes += len(data)
                if self._pending_bytes <= MAX_EVENT_BYTES:
                    self._pending.append(data)
                elif self._pending:
                    self._pending.clear()  # past the cap: _measure_body reports it, nothing is kept
                return
            if self._raw_reads is not None:
                self._raw_reads.append(data)
            if self._held_cr or 13 in data:  # int membership is a memchr, much cheaper than b"\r"
                data = self._to_lf(data)
            if self._dropping is not None:
                data = self._skip_event(data)
            pend = self._pending
            if pend:
                # Joining only when an event can end keeps a long event in many reads linear.
                if b"\n\n" not in data and not (data[:1] == b"\n" and pend[-1][-1:] == b"\n"):
                    if data:
                        pend.append(data)
                        self._pending_bytes += len(data)
                        self._check_pending()
                    return
                pend.append(data)
                data = b"".join(pend)
                pend.clear()
            tail = self._scan(data, now_s)
            if tail:
                pend.append(tail)
                self._pending_bytes = len(tail)
                self._check_pending()
        except Exception as exc:  # a meter bug must not kill a probe or a Locust user
            logger.exception("stream meter failed on a read")
            self._fail("bad_response", f"meter internal error: {exc!r}")

    def finish(self, now_s: float) -> StreamMeasurement:
        """Parse what is left and return the measurement; ``latency_ms`` ends at ``now_s``."""
        try:
            if not self._finalized:
                self._finalized = True
                self._finalize()
            return self._measurement(now_s)
        except Exception as exc:  # same reason as in feed()
            logger.exception("stream meter failed at finish")
            self._fail("bad_response", f"meter internal error: {exc!r}")
            return self._measurement(now_s, broken=True)

    def _scan(self, data: bytes, now_s: float) -> bytes:
        """Dispatch the complete events in ``data`` and return the unfinished rest.

        This runs once per token, so events of the hot layout are matched in place, without
        splitting ``data`` first; any other event goes through ``_event``.
        """
        pre, match, len_pre, pg, cg, prompt = self._hot
        add_part, add_time, now_ms = self._text_parts.append, self._content_ms.append, now_s * 1000.0
        cts = self._content_counts
        escapes = 0x5C in data  # one memchr per read spares most events a check of their own
        hits = i = 0
        while True:
            m = match(data, i + len_pre) if data.startswith(pre, i) else None
            if m is not None and m.end() - i <= MAX_EVENT_BYTES + 2:
                body = m[1]
                try:  # meter_layout.read_string, inlined
                    content = scanstring((body + b'"').decode(), 0)[0] if escapes and 0x5C in body else body.decode()
                except UnicodeDecodeError:
                    pass  # the slow path reports it
                else:
                    hits += 1
                    if cg:  # continuous_usage_stats: the slow path's _apply, inlined
                        completion = int(m[cg])
                        self._usage = (int(m[pg]) if pg else prompt, completion)
                        if content and cts is not None:
                            cts.append(completion)
                    if content:
                        add_part(content)
                        add_time(now_ms)
                    i = m.end()
                    continue
            end = data.find(b"\n\n", i)
            if end < 0:
                break
            self._event_count += hits  # keeps event numbers in error details right
            hits = 0
            if end - i > MAX_EVENT_BYTES:
                self._oversized()
            else:
                self._event(data[i:end], now_s)
            cts = self._content_counts
            i = end + 2
        self._event_count += hits
        return data[i:] if i else data

    def _check_pending(self) -> None:
        """Drop the unfinished event once it is past ``MAX_EVENT_BYTES``, unless it is a plain JSON body."""
        if self._pending_bytes <= MAX_EVENT_BYTES + 1:  # + 1: the first "\n" of its end may be in
            return
        # A server that ignored "stream": true sends one JSON object and no blank line; _finalize measures it
        # from _raw, which max_body_bytes bounds. Once a data event was seen there is no such fallback.
        if self._maybe_json_body(self._pending[0]):
            return
        last = self._pending[-1][-1:]
        self._pending.clear()
        self._pending_bytes = 0
        self._oversized()
        self._dropping = last

    def _maybe_json_body(self, start: bytes) -> bool:
        # A bounded prefix: this runs on every read of a long unfinished document.
        return self._raw_reads is not None and start[:4096].lstrip()[:1] == b"{"

    def _oversized(self) -> None:
        self._event_count += 1
        self._raw_reads = None
        self._fail("bad_response", f"SSE event {self._event_count} exceeds {MAX_EVENT_BYTES} bytes; dropped unparsed")

    def _skip_event(self, data: bytes) -> bytes:
        """What follows the end of the oversized event being dropped (``b""`` while it goes on)."""
        assert self._dropping is not None
        end = (self._dropping + data).find(b"\n\n")
        if end < 0:
            self._dropping = data[-1:] or self._dropping
            return b""
        self._dropping = None
        return data[end + 1 :]  # end counts the held-back byte

    def _to_lf(self, data: bytes) -> bytes:
        if self._held_cr:
            data = b"\r" + data
        # Hold back a final "\r" until the next read shows whether "\n" follows it.
        self._held_cr = data[-1:] == b"\r"
        if self._held_cr:
            data = data[:-1]
        return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    def _event(self, block: bytes, now_s: float) -> None:
        payload: bytes | None
        single = block[:5] == b"data:" and b"\n" not in block
        if single:
            if self._layouts and self._match(block, now_s):
                return
            payload = block[6:] if block[5:6] == b" " else block[5:]
        else:
            payload = _data_field(block)
        if not payload:
            return
        self._raw_reads = None
        if payload == b"[DONE]" or (len(payload) < 16 and payload.strip() == b"[DONE]"):
            self._done_seen = True
            return
        if single and self._learn_budget and self._learn(block) and self._match(block, now_s, learnt=True):
            return
        self._event_count += 1
        chunk = self._parse_event(payload)
        if chunk is not None:
            self._apply(chunk, now_s)

    def _match(self, block: bytes, now_s: float, *, learnt: bool = False) -> bool:
        for layout in self._layouts:
            chunk = layout.read(block) if block.startswith(layout.pre) else None
            if chunk is not None:
                self._event_count += 1
                self._apply(chunk, now_s)
                if layout.hot:
                    # Compile only for a layout seen twice (or in an earlier stream), not for one
                    # whose bytes vary per event, such as a random per-chunk field.
                    self._promote(layout, cached_only=learnt)
                return True
        return False

    def _promote(self, layout: Layout, *, cached_only: bool) -> None:
        compiled = layout.compiled(cached_only=cached_only)
        if compiled is not None:
            rest, pg, cg = compiled
            usage = layout.chunk.usage
            self._hot = (layout.pre, rest.match, len(layout.pre), pg, cg, usage[0] if usage else None)

    def _parse_event(self, payload: bytes) -> _Chunk | None:
        n = self._event_count
        try:
            obj = json.loads(payload.decode())
        except UnicodeDecodeError:
            self._fail("bad_response", f"invalid UTF-8 in SSE event {n}")
            return None
        except (ValueError, RecursionError) as exc:
            preview = self._untrusted.preview(payload, _PREVIEW_CHARS)
            self._fail("bad_response", f"malformed JSON in SSE event {n}: {exc}; data: {preview}")
            return None
        message = envelope_message(obj)
        if message is not None:
            self._fail("stream_error", message)
            return None
        chunk = _parse_chunk(obj, self._endpoint)
        if isinstance(chunk, str):
            self._fail("bad_response", f"SSE event {n} {chunk}")
            return None
        return chunk

    def _learn(self, block: bytes) -> bool:
        """Learn this event's layout (see ``monitor.meter_layout``), so later events skip ``json.loads``."""
        slot = find_string(block, self._text_marker)
        # Role and finish chunks come once per stream: not worth a layout. Most have empty content.
        if slot is None or _FINISHED.search(block) is not None:
            return False
        self._learn_budget -= 1
        layout = learn_layout(block, *slot, self._interpret)
        if layout is None:
            return False
        self._layouts.append(layout)
        return True

    def _interpret(self, obj: object) -> _Chunk | None:
        chunk = _parse_chunk(obj, self._endpoint)
        return chunk if isinstance(chunk, _Chunk) and envelope_message(obj) is None else None

    def _apply(self, chunk: _Chunk, now_s: float) -> None:
        content = chunk.content
        if chunk.finish_reason is not None:
            self._finish_reason = chunk.finish_reason
        if chunk.stop_reason is not None:
            self._stop_reason = chunk.stop_reason
        usage = chunk.usage
        if usage is not None:
            self._usage = usage
        if content:
            self._text_parts.append(content)
            self._content_ms.append(now_s * 1000.0)
            cts = self._content_counts
            if cts is not None:
                if usage is None or usage[1] is None:
                    self._content_counts = None
                else:
                    cts.append(usage[1])

    def _fail(self, kind: MeterErrorKind, detail: str) -> None:
        if self._error is None:
            self._error = (kind, self._untrusted.line(detail, ERROR_DETAIL_MAX_CHARS))

    def _finalize(self) -> None:
        if self._body_mode:
            if self._pending_bytes > MAX_EVENT_BYTES:
                self._fail(
                    "bad_response", f"response body of {self._pending_bytes} bytes exceeds {MAX_EVENT_BYTES} bytes"
                )
                return
            self._measure_body(b"".join(self._pending))
            return
        tail = b"".join(self._pending) + (b"\n" if self._held_cr else b"")
        self._pending.clear()
        # A final event without its blank line (or even its newline) is still parsed;
        # a cut-off one then shows up as malformed JSON.
        for block in tail.split(b"\n\n"):
            if len(block) > MAX_EVENT_BYTES and not self._maybe_json_body(block):
                self._oversized()
            else:
                self._event(block, self._last_s)
        if self._event_count or self._done_seen:
            if not self._event_count:
                self._fail("bad_response", "empty stream: only [DONE]")
            return
        body = b"".join(self._raw_reads or ())
        if body.lstrip()[:1] == b"{":  # a server that ignored "stream": true
            self._body_mode = True
            if len(body) > MAX_EVENT_BYTES:
                self._fail("bad_response", f"response body of {len(body)} bytes exceeds {MAX_EVENT_BYTES} bytes")
            else:
                self._measure_body(body)
        elif body.strip():
            preview = self._untrusted.preview(body, _PREVIEW_CHARS)
            self._fail("bad_response", f"no SSE data events in stream body: {preview}")
        else:
            self._fail("bad_response", "empty stream")

    def _measure_body(self, body: bytes) -> None:
        if not body.strip():
            self._fail("bad_response", "empty response body")
            return
        self._event_count = 1
        try:
            obj = json.loads(body.decode())
        except UnicodeDecodeError:
            self._fail("bad_response", "invalid UTF-8 in response body")
            return
        except (ValueError, RecursionError) as exc:
            self._fail("bad_response", f"malformed JSON response body: {exc}")
            return
        parsed = _parse_body(obj, self._endpoint)
        if isinstance(parsed, str):
            self._fail("bad_response", parsed)
        else:
            self._apply(parsed, self._last_s)

    def _itl(self) -> tuple[tuple[float, ...], bool]:
        ts, cts = self._content_ms, self._content_counts
        diffs = list(map(operator.sub, islice(ts, 1, None), ts))
        # Exact only if every content event carried usage (a plain hot layout appends no count).
        if not cts or len(cts) != len(ts) or cts[-1] - cts[0] > _MAX_EXACT_ITL_GAPS:
            return tuple(diffs), False
        steps = list(map(operator.sub, islice(cts, 1, None), cts))
        if min(steps, default=1) <= 0:
            return tuple(diffs), False
        if max(steps, default=1) == 1:  # one token per event, the usual case: x / 1 == x
            return tuple(diffs), True
        gaps: list[float] = []
        for gap, k in zip(diffs, steps, strict=True):
            gaps.extend([gap / k] * k)
        return tuple(gaps), True

    def _measurement(self, now_s: float, *, broken: bool = False) -> StreamMeasurement:
        clean = self._untrusted.text
        text = "" if broken else clean("".join(self._text_parts))
        times, sse = self._content_ms, not self._body_mode
        itl_ms, exact = self._itl() if sse else ((), False)
        prompt_tokens, completion_tokens = (_plausible(n) for n in self._usage or (None, None))
        estimated = completion_tokens is None
        if completion_tokens is None:
            completion_tokens = len(times) if sse else estimate_tokens(text)
        kind, detail = self._error or (None, None)
        finish, stop = self._finish_reason, self._stop_reason
        return StreamMeasurement(
            endpoint=self._endpoint,
            stream=self._stream,
            text=text,
            ttft_ms=times[0] - self._start_s * 1000.0 if sse and times else None,
            latency_ms=(now_s - self._start_s) * 1000.0,
            itl_ms=itl_ms,
            chunk_count=self._event_count,
            content_chunk_count=len(times),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            tokens_estimated=estimated,
            itl_per_token_exact=exact,
            finish_reason=None if finish is None else clean(finish),
            stop_reason=clean(stop) if isinstance(stop, str) else stop,
            done_seen=self._done_seen,
            error_kind=kind,
            error_detail=detail,
            sanitised=self._untrusted.sanitised,
        )


def _data_field(block: bytes) -> bytes | None:
    """The SSE data of one event: its ``data`` lines joined by newlines; None if it has none."""
    values: list[bytes] = []
    for line in block.split(b"\n"):
        if line[:4] != b"data":
            continue  # comments (": ping"), event:, id:, retry:
        if len(line) == 4:
            values.append(b"")
        elif line[4] == 0x3A:
            values.append(line[6:] if line[5:6] == b" " else line[5:])
    return b"\n".join(values) if values else None


def _parse_chunk(obj: object, endpoint: Endpoint) -> _Chunk | str:
    """Interpret one streamed JSON event; a string names what is wrong with it."""
    if not isinstance(obj, dict):
        return "is not a JSON object"
    usage = _usage(obj.get("usage"))
    choices = obj.get("choices")
    if not isinstance(choices, list):
        return _Chunk("", None, None, usage) if usage is not None else "has no choices list"
    choice = _choice0(choices)
    if choice is None:
        return _Chunk("", None, None, usage)
    if endpoint == "chat":
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = choice.get("message")  # a whole response sent as one event
        content = delta.get("content") if isinstance(delta, dict) else None
    else:
        content = choice.get("text")
    return _Chunk(
        content if isinstance(content, str) else "",
        _str_or_none(choice.get("finish_reason")),
        _stop_reason(choice.get("stop_reason")),
        usage,
    )


def _parse_body(obj: object, endpoint: Endpoint) -> _Chunk | str:
    """Interpret a whole JSON response; a string says what is wrong with it."""
    message = envelope_message(obj)
    if message is not None:  # vLLM and proxies can send an error envelope with a 200
        return f"error in response body: {message}"
    if not isinstance(obj, dict):
        return "response body is not a JSON object"
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices:
        return "response has no choices"
    choice = _choice0(choices)
    if choice is None:
        return "response has no choice with index 0"
    if endpoint == "chat":
        message_obj = choice.get("message")
        if not isinstance(message_obj, dict):
            return "choices[0] has no message object"
        text = message_obj.get("content")  # null when the reply is only tool calls
    elif "text" in choice:
        text = choice["text"]
    else:
        return "choices[0] has no text"
    if text is not None and not isinstance(text, str):
        return f"choices[0] content is a {type(text).__name__}, not a string"
    finish, stop = _str_or_none(choice.get("finish_reason")), _stop_reason(choice.get("stop_reason"))
    return _Chunk(text or "", finish, stop, _usage(obj.get("usage")))


def _choice0(choices: list[Any]) -> dict[str, Any] | None:
    for pos, choice in enumerate(choices):
        if isinstance(choice, dict):
            index = choice.get("index", pos)
            if index == 0 and not isinstance(index, bool):
                return choice
    return None


def _usage(value: object) -> _Usage | None:
    if not isinstance(value, dict):
        return None
    prompt, completion = _int_or_none(value.get("prompt_tokens")), _int_or_none(value.get("completion_tokens"))
    return None if prompt is None and completion is None else (prompt, completion)


def _plausible(count: int | None) -> int | None:
    """A server's token count, or None when it cannot be one (negative, or past a 32-bit counter)."""
    return count if count is not None and 0 <= count <= MAX_TOKEN_COUNT else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _stop_reason(value: object) -> str | int | None:
    # vLLM reports a matched stop token id as an int and a matched stop string as a str.
    return _str_or_none(value) if not isinstance(value, int) else _int_or_none(value)
