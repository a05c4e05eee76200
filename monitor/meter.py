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
measured like a non-streaming reply (``ttft_ms`` None).

Locust feeds thousands of streams per second per core, so the common vLLM chunk shapes
take a fast path: the first content event of each layout is fully parsed, and later events
that differ only in the content string are matched by bytes. Anything unusual goes through
``json.loads``; both paths give identical measurements (see tests/test_meter.py).
"""

from __future__ import annotations

import json
import logging
import operator
import re
from _json import scanstring
from dataclasses import dataclass
from itertools import islice, pairwise
from typing import Any, Literal, NamedTuple

__all__ = ["Endpoint", "MeterErrorKind", "StreamMeasurement", "StreamMeter", "estimate_tokens"]

logger = logging.getLogger(__name__)

Endpoint = Literal["chat", "completion"]
MeterErrorKind = Literal["bad_response", "stream_error"]

ERROR_DETAIL_MAX_CHARS = 300


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


_Usage = tuple[int | None, int | None]


class _Chunk(NamedTuple):
    content: str
    finish_reason: str | None
    stop_reason: str | int | None
    usage: _Usage | None


class _Layout(NamedTuple):
    """An event's bytes around its content string (``pre + <JSON string body> + post``) and meaning."""

    pre: bytes
    post: bytes
    chunk: _Chunk


# Bytes JSON forbids raw inside a string, plus the escape character.
_SLOT_SPECIAL = re.compile(rb'["\\\x00-\x1f]')
_CONTROL = re.compile(rb"[\x00-\x1f]")
# Substituted into a learned layout to prove its string slot is choice 0's content.
_SENTINEL = "\x7fllm-monitor-slot\x7f"
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
        "_endpoint", "_stream", "_start_s", "_last_s", "_marker", "_layouts", "_hot", "_learn_budget",
        "_pend", "_cr", "_raw", "_parts", "_content_ms", "_content_ct", "_n", "_done", "_finish", "_stop",
        "_usage", "_error", "_body_mode", "_finalized",
    )  # fmt: skip

    def __init__(self, endpoint: Endpoint, *, stream: bool, start_s: float) -> None:
        self._endpoint: Endpoint = endpoint
        self._stream = stream
        self._start_s = start_s
        self._last_s = start_s
        self._marker = b'"content":"' if endpoint == "chat" else b'"text":"'  # where _learn looks
        self._layouts: list[_Layout] = []
        # The latest plain layout (no finish, stop or usage): (pre, post + "\n\n", their lengths).
        self._hot: tuple[bytes, bytes, int, int] | None = None
        self._learn_budget = self._LEARN_ATTEMPTS
        self._pend: list[bytes] = []  # non-stream: the body; stream: bytes of an unfinished event
        self._cr = False  # a read ended in "\r": it may be half of "\r\n"
        self._raw: list[bytes] | None = []  # kept until the first data event, for the plain-JSON fallback
        self._parts: list[str] = []
        self._content_ms: list[float] = []
        self._content_ct: list[int] | None = []
        self._n = 0
        self._done = False
        self._finish: str | None = None
        self._stop: str | int | None = None
        self._usage: _Usage | None = None
        self._error: tuple[MeterErrorKind, str] | None = None
        self._body_mode = not stream
        self._finalized = False

    def feed(self, data: bytes, now_s: float) -> None:
        """Add one read of the body; never raises. Events completed by this read get ``now_s``."""
        try:
            self._last_s = now_s
            if self._body_mode:
                self._pend.append(data)
                return
            if self._raw is not None:
                self._raw.append(data)
            if self._cr or 13 in data:  # int membership is a memchr, much cheaper than b"\r"
                data = self._to_lf(data)
            pend = self._pend
            if pend:
                # Joining only when an event can end keeps a long event in many reads linear.
                if b"\n\n" not in data and not (data[:1] == b"\n" and pend[-1][-1:] == b"\n"):
                    if data:
                        pend.append(data)
                    return
                pend.append(data)
                data = b"".join(pend)
                pend.clear()
            tail = self._scan(data, now_s)
            if tail:
                pend.append(tail)
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
        hot = self._hot
        pre, post_nn, len_pre, len_post_nn = hot or (b"", b"", 0, 0)
        add_part, add_time, now_ms = self._parts.append, self._content_ms.append, now_s * 1000.0
        escapes = 0x5C in data  # one memchr per read spares most events a check of their own
        hits = i = 0
        while True:
            if hot is not None and data.startswith(pre, i):
                a = i + len_pre
                b = data.find(b'"', a)
                content: str | None = None
                if b >= 0:
                    slot = data[a:b]
                    if escapes and 0x5C in slot:
                        content, b = _escaped_slot(data, a, post_nn)
                    elif data.startswith(post_nn, b):
                        try:
                            content = slot.decode()
                        except UnicodeDecodeError:
                            pass
                        else:
                            # Raw control characters make the JSON invalid; isprintable() is
                            # a cheap way to rule them out for almost all text.
                            if not content.isprintable() and _CONTROL.search(slot) is not None:
                                content = None
                if content is not None:
                    hits += 1
                    if content:
                        add_part(content)
                        add_time(now_ms)
                    i = b + len_post_nn
                    continue
            end = data.find(b"\n\n", i)
            if end < 0:
                break
            self._n += hits  # keeps event numbers in error details right
            hits = 0
            self._event(data[i:end], now_s)
            i = end + 2
        self._n += hits
        return data[i:] if i else data

    def _to_lf(self, data: bytes) -> bytes:
        if self._cr:
            data = b"\r" + data
        # Hold back a final "\r" until the next read shows whether "\n" follows it.
        self._cr = data[-1:] == b"\r"
        if self._cr:
            data = data[:-1]
        return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    def _event(self, blk: bytes, now_s: float) -> None:
        payload: bytes | None
        single = blk[:5] == b"data:" and b"\n" not in blk
        if single:
            if self._layouts and self._match(blk, now_s):
                return
            payload = blk[6:] if blk[5:6] == b" " else blk[5:]
        else:
            payload = _data_field(blk)
        if not payload:
            return
        self._raw = None
        if payload == b"[DONE]" or (len(payload) < 16 and payload.strip() == b"[DONE]"):
            self._done = True
            return
        if single and self._learn_budget and self._learn(blk) and self._match(blk, now_s):
            return
        self._n += 1
        chunk = self._parse_event(payload)
        if chunk is not None:
            self._apply(chunk.content, chunk, now_s)

    def _match(self, blk: bytes, now_s: float) -> bool:
        for pre, post, chunk in self._layouts:
            if len(blk) >= len(pre) + len(post) and blk.startswith(pre) and blk.endswith(post):
                content = _read_slot(blk[len(pre) : len(blk) - len(post)])
                if content is not None:
                    self._n += 1
                    self._apply(content, chunk, now_s)
                    return True
        return False

    def _parse_event(self, payload: bytes) -> _Chunk | None:
        n = self._n
        try:
            obj = json.loads(payload.decode())
        except UnicodeDecodeError:
            self._fail("bad_response", f"invalid UTF-8 in SSE event {n}")
            return None
        except (ValueError, RecursionError) as exc:
            preview = payload[:80].decode(errors="replace")
            self._fail("bad_response", f"malformed JSON in SSE event {n}: {exc}; data: {preview}")
            return None
        message = _error_message(obj)
        if message is not None:
            self._fail("stream_error", message)
            return None
        chunk = _parse_chunk(obj, self._endpoint)
        if isinstance(chunk, str):
            self._fail("bad_response", f"SSE event {n} {chunk}")
            return None
        return chunk

    def _learn(self, blk: bytes) -> bool:
        """Learn the bytes around this event's content string, so later events skip ``json.loads``.

        A layout is kept only if putting a sentinel in the string yields an event whose
        choice-0 content is the sentinel: then any valid JSON string in that slot parses to
        the same event with that string as content, whatever else the layout holds.
        """
        a = blk.find(self._marker)
        if a < 0:
            return False
        a += len(self._marker)
        try:
            tail = blk[a:].decode()
            end = a + len(tail[: scanstring(tail, 0)[1] - 1].encode())  # the closing quote
        except ValueError:
            return False
        if end == a:  # empty content marks role and finish chunks, which come once per stream
            return False
        pre, post = blk[:a], blk[end:]
        self._learn_budget -= 1
        head = pre[6:] if pre[5:6] == b" " else pre[5:]
        try:
            obj = json.loads(head.decode() + _SENTINEL + post.decode())
        except (ValueError, RecursionError):
            return False
        chunk = _parse_chunk(obj, self._endpoint)
        if _error_message(obj) is not None or not isinstance(chunk, _Chunk) or chunk.content != _SENTINEL:
            return False
        self._layouts.append(_Layout(pre, post, chunk))
        if chunk.finish_reason is None and chunk.stop_reason is None and chunk.usage is None:
            # The latest plain layout: OpenAI-style servers add "role" to the first content chunk only.
            self._hot = (pre, post + b"\n\n", len(pre), len(post) + 2)
        return True

    def _apply(self, content: str, chunk: _Chunk, now_s: float) -> None:
        if chunk.finish_reason is not None:
            self._finish = chunk.finish_reason
        if chunk.stop_reason is not None:
            self._stop = chunk.stop_reason
        usage = chunk.usage
        if usage is not None:
            self._usage = usage
        if content:
            self._parts.append(content)
            self._content_ms.append(now_s * 1000.0)
            cts = self._content_ct
            if cts is not None:
                if usage is None or usage[1] is None:
                    self._content_ct = None
                else:
                    cts.append(usage[1])

    def _fail(self, kind: MeterErrorKind, detail: str) -> None:
        if self._error is None:
            self._error = (kind, _one_line(detail))

    def _finalize(self) -> None:
        if self._body_mode:
            self._measure_body(b"".join(self._pend))
            return
        tail = b"".join(self._pend) + (b"\n" if self._cr else b"")
        self._pend.clear()
        # A final event without its blank line (or even its newline) is still parsed;
        # a cut-off one then shows up as malformed JSON.
        for blk in tail.split(b"\n\n"):
            self._event(blk, self._last_s)
        if self._n or self._done:
            if not self._n:
                self._fail("bad_response", "empty stream: only [DONE]")
            return
        body = b"".join(self._raw or ())
        if body.lstrip()[:1] == b"{":  # a server that ignored "stream": true
            self._body_mode = True
            self._measure_body(body)
        elif body.strip():
            self._fail("bad_response", f"no SSE data events in stream body: {body[:80].decode(errors='replace')}")
        else:
            self._fail("bad_response", "empty stream")

    def _measure_body(self, body: bytes) -> None:
        if not body.strip():
            self._fail("bad_response", "empty response body")
            return
        self._n = 1
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
            self._apply(parsed.content, parsed, self._last_s)

    def _itl(self) -> tuple[tuple[float, ...], bool]:
        ts, cts = self._content_ms, self._content_ct
        # Exact only if every content event carried usage; hot-layout events never do.
        if (
            cts
            and len(cts) == len(ts)
            and all(c1 > c0 for c0, c1 in pairwise(cts))
            and cts[-1] - cts[0] <= _MAX_EXACT_ITL_GAPS
        ):
            gaps: list[float] = []
            for (t0, t1), (c0, c1) in zip(pairwise(ts), pairwise(cts), strict=True):
                k = c1 - c0
                gaps.extend([(t1 - t0) / k] * k)
            return tuple(gaps), True
        return tuple(map(operator.sub, islice(ts, 1, None), ts)), False

    def _measurement(self, now_s: float, *, broken: bool = False) -> StreamMeasurement:
        text = "" if broken else "".join(self._parts)
        times, sse = self._content_ms, not self._body_mode
        itl_ms, exact = self._itl() if sse else ((), False)
        prompt_tokens, completion_tokens = self._usage or (None, None)
        estimated = completion_tokens is None
        if completion_tokens is None:
            completion_tokens = len(times) if sse else estimate_tokens(text)
        kind, detail = self._error or (None, None)
        return StreamMeasurement(
            endpoint=self._endpoint,
            stream=self._stream,
            text=text,
            ttft_ms=times[0] - self._start_s * 1000.0 if sse and times else None,
            latency_ms=(now_s - self._start_s) * 1000.0,
            itl_ms=itl_ms,
            chunk_count=self._n,
            content_chunk_count=len(times),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            tokens_estimated=estimated,
            itl_per_token_exact=exact,
            finish_reason=self._finish,
            stop_reason=self._stop,
            done_seen=self._done,
            error_kind=kind,
            error_detail=detail,
        )


def _read_slot(slot: bytes) -> str | None:
    if _SLOT_SPECIAL.search(slot) is not None:
        return _read_escaped(slot)
    try:
        return slot.decode()
    except UnicodeDecodeError:
        return None


def _escaped_slot(data: bytes, a: int, post_nn: bytes) -> tuple[str | None, int]:
    """Content and end of a hot event's string when it holds escapes (ensure_ascii servers).

    The first quote may be escaped, so the slot is taken to end where ``post_nn`` would end
    the line; ``_read_escaped`` then checks that it is exactly one JSON string body.
    """
    b = data.find(b"\n", a) + 2 - len(post_nn)
    if b >= a and data.startswith(post_nn, b):
        return _read_escaped(data[a:b]), b
    return None, b


def _read_escaped(slot: bytes) -> str | None:
    """Decode a slot holding escapes, or None if it is not exactly one JSON string body."""
    try:
        s = (slot + b'"').decode()
        content, end = scanstring(s, 0)
    except ValueError:  # also UnicodeDecodeError and JSONDecodeError
        return None
    return content if end == len(s) else None


def _data_field(blk: bytes) -> bytes | None:
    """The SSE data of one event: its ``data`` lines joined by newlines; None if it has none."""
    values: list[bytes] = []
    for line in blk.split(b"\n"):
        if line[:4] != b"data":
            continue  # comments (": ping"), event:, id:, retry:
        if len(line) == 4:
            values.append(b"")
        elif line[4] == 0x3A:
            values.append(line[6:] if line[5:6] == b" " else line[5:])
    return b"\n".join(values) if values else None


def _error_message(obj: object) -> str | None:
    """The message of an error envelope (nested >= 0.10.1, flat before), else None."""
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if err is not None:
        if isinstance(err, dict) and err.get("message") is not None:
            return str(err["message"])
        return json.dumps(err, ensure_ascii=False)
    if obj.get("object") == "error":
        return str(obj.get("message") or json.dumps(obj, ensure_ascii=False))
    return None


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
    message = _error_message(obj)
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


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _stop_reason(value: object) -> str | int | None:
    # vLLM reports a matched stop token id as an int and a matched stop string as a str.
    return _str_or_none(value) if not isinstance(value, int) else _int_or_none(value)


def _one_line(detail: str) -> str:
    flat = " ".join(detail.split())
    return flat if len(flat) <= ERROR_DETAIL_MAX_CHARS else flat[: ERROR_DETAIL_MAX_CHARS - 1] + "…"
