"""Learned event layouts: how one stream's events look around the values that change.

vLLM writes every content chunk of a stream the same way, and every reasoning chunk; only the
string changes and, with ``continuous_usage_stats``, the numbers in the usage object. A ``Layout``
keeps the bytes before the string (``pre``) and the constant pieces after it, split at the
``*_tokens`` numbers (plain digits, at most 15). The meter learns one from the first content (or
reasoning) event and reads later events from these slots alone, without ``json.loads``:
``Layout.read`` for single events, and a compiled pattern (``Layout.compiled``, shared by streams)
once the layout has repeated.

A layout is kept only if it is proved. The event is parsed with a sentinel in the string slot
and distinct sentinel numbers in the number slots; the content or the reasoning must come out as
the sentinel (``feeds_reasoning`` says which), and each usage field is then either a sentinel (fed
by that slot) or a constant. Another JSON
string body in the string slot, or another plain digit run in a number slot, keeps every token
of the document in place, so any event the pattern matches parses to the sentinel chunk with
its own values in place of the sentinels. A number slot is the value of a ``*_tokens`` key
outside any string, so it can feed nothing but usage. An event that could spell the sentinel
itself (raw or ``\\u``-escaped) must prove the slot with a second sentinel. The rest of the chunk
(reasons, reasoning, tool calls, usage fields no slot feeds) is the same in every matching event,
so the layout keeps it as it came out. Pure, no I/O.
"""

from __future__ import annotations

import json
import re
from _json import scanstring
from collections.abc import Callable
from typing import NamedTuple

from monitor.meter_chunks import NO_USAGE, Chunk

__all__ = ["COLD", "HotLayout", "Layout", "find_string", "learn_layout", "read_string"]

# One JSON string body (without quotes). Possessive, so a damaged event fails in linear time.
_STRING = rb'((?:[^"\\\x00-\x1f]++|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*+)'
# At most 15 digits: int() stays cheap and json.loads would refuse numbers past 4,300 digits.
_MAX_DIGITS = 15
_NUMBER = rb"(?:0|[1-9][0-9]{0,%d})" % (_MAX_DIGITS - 1)
_STRING_RE, _NUMBER_RE = re.compile(_STRING), re.compile(_NUMBER)
_USAGE_NUMBER = re.compile(rb'"(?:prompt|total|completion|reasoning)_tokens"\s*:\s*([0-9]+)')
_MAX_SLOTS = 6
_TEXT_SENTINEL = "\x7fllm-monitor-slot\x7f"
_OTHER_TEXT_SENTINEL = "\x7fllm-monitor-slot-2\x7f"
# Compiled patterns by (pieces, captured slots); vLLM's pieces hold no per-stream bytes (ids sit in pre).
_PATTERNS: dict[tuple[tuple[bytes, ...], tuple[bool, ...]], re.Pattern[bytes]] = {}
_MAX_PATTERNS = 64
_INT_SENTINEL = 7_046_309_000_000_001  # 19 digits: no usage number a real server sends


class HotLayout(NamedTuple):
    """A repeated plain layout (see ``Layout.hot``), compiled: the meter's scan loop matches it in place."""

    pre: bytes  # the event's bytes up to its string
    match_rest: Callable[[bytes, int], re.Match[bytes] | None]  # the rest, from the string to the blank line
    pre_len: int
    prompt_group: int  # the match group of prompt_tokens; 0: no slot
    completion_group: int  # likewise completion_tokens (continuous_usage_stats)
    reasoning_group: int  # likewise completion_tokens_details.reasoning_tokens
    prompt_tokens: int | None  # the constant prompt_tokens when only completion_tokens has a slot
    reasoning_tokens: int | None  # likewise reasoning_tokens
    feeds_reasoning: bool  # the string is the reasoning, not the content


COLD = HotLayout(b"", re.compile(b"(?!)").match, 0, 0, 0, 0, None, None, False)  # no layout yet: never matches


class Layout(NamedTuple):
    """One learned event shape: ``pre``, a string body, then ``pieces`` with a number between each two."""

    pre: bytes  # the event up to its string body, "data:" included
    pieces: tuple[bytes, ...]  # the bytes after the string body, split at the number slots
    chunk: Chunk  # everything the slots do not feed: the reasons, other usage fields, the other text, tool calls
    feeds_reasoning: bool  # the string is the reasoning, not the content
    prompt_slot: int  # the number slot holding prompt_tokens, -1 if none
    completion_slot: int
    reasoning_slot: int  # completion_tokens_details.reasoning_tokens

    @property
    def hot(self) -> bool:
        """A plain content (or reasoning) event: no finish or stop reason, other text or tool call; no
        usage, or completion_tokens from a slot (the meter's scan loop handles nothing else)."""
        chunk = self.chunk
        plain = chunk.finish_reason is None and chunk.stop_reason is None and not chunk.tool_calls
        other_text = chunk.content if self.feeds_reasoning else chunk.reasoning
        no_usage = chunk.usage is None and self.prompt_slot < 0 and self.reasoning_slot < 0
        return plain and not other_text and (self.completion_slot >= 0 or no_usage)

    def read(self, block: bytes) -> Chunk | None:
        """The chunk of a whole one-line event (without its blank line), or None if it has another layout."""
        body = _STRING_RE.match(block, len(self.pre)) if block.startswith(self.pre) else None
        if body is None:
            return None
        pos, numbers = body.end(), []
        for piece in self.pieces[:-1]:
            number = _NUMBER_RE.match(block, pos + len(piece)) if block.startswith(piece, pos) else None
            if number is None:
                return None
            numbers.append(int(number[0]))
            pos = number.end()
        text = read_string(body[1]) if block[pos:] == self.pieces[-1] else None
        if text is None:
            return None
        chunk, usage = self.chunk, self.chunk.usage
        prompt_slot, completion_slot, reasoning_slot = self.prompt_slot, self.completion_slot, self.reasoning_slot
        if prompt_slot >= 0 or completion_slot >= 0 or reasoning_slot >= 0:
            prompt, completion, reasoning = usage or NO_USAGE
            usage = (
                numbers[prompt_slot] if prompt_slot >= 0 else prompt,
                numbers[completion_slot] if completion_slot >= 0 else completion,
                numbers[reasoning_slot] if reasoning_slot >= 0 else reasoning,
            )
        if self.feeds_reasoning:
            return Chunk(chunk.content, chunk.finish_reason, chunk.stop_reason, usage, text, chunk.tool_calls)
        return Chunk(text, chunk.finish_reason, chunk.stop_reason, usage, chunk.reasoning, chunk.tool_calls)

    def compiled(self, *, cached_only: bool = False) -> tuple[re.Pattern[bytes], int, int, int] | None:
        """The pattern for the meter's scan loop, with its prompt, completion and reasoning-token groups (0: none).

        It matches from the string body (group 1) through the blank line: the same events as ``read``.
        Compiling costs ~0.1 ms, so patterns are shared by streams; ``cached_only`` never compiles.
        """
        slots = (self.prompt_slot, self.completion_slot, self.reasoning_slot)
        captured = tuple(j in slots for j in range(len(self.pieces) - 1))
        rest = _PATTERNS.get((self.pieces, captured))
        if rest is None:
            if cached_only:
                return None
            if len(_PATTERNS) >= _MAX_PATTERNS:
                del _PATTERNS[next(iter(_PATTERNS))]
            rest = _PATTERNS[self.pieces, captured] = _compile(self.pieces, captured)
        prompt, completion, reasoning = (2 + sum(captured[:j]) if j >= 0 else 0 for j in slots)
        return rest, prompt, completion, reasoning

    def hot_layout(self, *, cached_only: bool = False) -> HotLayout | None:
        """This (hot) layout as the scan loop uses it; None if ``cached_only`` and it is not compiled yet."""
        compiled = self.compiled(cached_only=cached_only)
        if compiled is None:
            return None
        rest, prompt_group, completion_group, reasoning_group = compiled
        prompt_tokens, _, reasoning_tokens = self.chunk.usage or NO_USAGE
        groups = (prompt_group, completion_group, reasoning_group)
        return HotLayout(
            self.pre, rest.match, len(self.pre), *groups, prompt_tokens, reasoning_tokens, self.feeds_reasoning
        )


def read_string(body: bytes) -> str | None:
    """Decode a string body that ``_STRING`` matched; None if it is not valid UTF-8."""
    try:
        if 0x5C in body:
            return scanstring((body + b'"').decode(), 0)[0]
        return body.decode()
    except UnicodeDecodeError:
        return None


def find_string(block: bytes, marker: bytes) -> tuple[int, int] | None:
    """Start and end of the non-empty JSON string body that follows the first ``marker``."""
    start = block.find(marker)
    if start < 0:
        return None
    start += len(marker)
    try:
        tail = block[start:].decode()
        end = start + len(tail[: scanstring(tail, 0)[1] - 1].encode())  # the closing quote
    except ValueError:
        return None
    return (start, end) if end > start else None


def learn_layout(block: bytes, start: int, end: int, interpret: Callable[[object], Chunk | None]) -> Layout | None:
    """Learn the layout of a one-line ``data:`` event whose content (or reasoning) string body is ``block[start:end]``.

    ``interpret`` turns a parsed event into its chunk, or None if it is not a chunk (an error).
    Costs one ``json.loads`` (two if the event could hold the sentinel itself); None if the layout
    cannot be proved.
    """
    pre, post = block[:start], block[end:]
    pieces: list[bytes] = []
    filled = b""  # post with a sentinel in each integer slot
    values: list[int] = []  # the sentinels
    last = 0
    for m in _USAGE_NUMBER.finditer(post) if b"_tokens" in post else ():
        start, stop = m.span(1)
        values.append(_INT_SENTINEL + len(values))
        digits = b"%d" % values[-1]
        if digits in block or len(values) > _MAX_SLOTS:
            return None
        pieces.append(post[last:start])
        filled += post[last:start] + digits
        last = stop
    pieces.append(post[last:])
    head, tail = pre[6:] if pre[5:6] == b" " else pre[5:], filled + pieces[-1]
    chunk = _parse(interpret, head, _TEXT_SENTINEL, tail)
    feeds_reasoning = _fed(chunk, _TEXT_SENTINEL)
    if chunk is None or feeds_reasoning is None:
        return None
    # The sentinel written (or \u-escaped) into the event itself would pass for the slot's value, and the
    # slot could then feed a field no chunk reads: prove it again with another sentinel.
    if b"monitor-slot" in block or b"\\u" in pre or b"\\u" in post:
        if _fed(_parse(interpret, head, _OTHER_TEXT_SENTINEL, tail), _OTHER_TEXT_SENTINEL) is not feeds_reasoning:
            return None
    usage, slots = chunk.usage, [-1, -1, -1]  # prompt_slot, completion_slot, reasoning_slot
    if values:
        fields = usage or NO_USAGE
        slots = [values.index(v) if v is not None and v in values else -1 for v in fields]
        prompt, completion, reasoning_tokens = (None if j >= 0 else v for j, v in zip(slots, fields, strict=True))
        constants = (prompt, completion, reasoning_tokens)
        usage = None if constants == NO_USAGE else constants
    content, reasoning = (chunk.content, "") if feeds_reasoning else ("", chunk.reasoning)
    constant = Chunk(content, chunk.finish_reason, chunk.stop_reason, usage, reasoning, chunk.tool_calls)
    return Layout(pre, tuple(pieces), constant, feeds_reasoning, slots[0], slots[1], slots[2])


def _fed(chunk: Chunk | None, sentinel: str) -> bool | None:
    """Which text the sentinel came out as: False the content, True the reasoning, None neither (or both)."""
    if chunk is None or (chunk.content == sentinel) == (chunk.reasoning == sentinel):
        return None
    return chunk.reasoning == sentinel


def _parse(interpret: Callable[[object], Chunk | None], head: bytes, text: str, tail: bytes) -> Chunk | None:
    try:  # invalid UTF-8 is a ValueError too
        return interpret(json.loads(head.decode() + text + tail.decode()))
    except (ValueError, RecursionError):
        return None


def _compile(pieces: tuple[bytes, ...], captured: tuple[bool, ...]) -> re.Pattern[bytes]:
    regex = _STRING + re.escape(pieces[0])
    for piece, capture in zip(pieces[1:], captured, strict=True):
        regex += (b"(%s)" if capture else b"%s") % _NUMBER + re.escape(piece)
    return re.compile(regex + b"\n\n")
