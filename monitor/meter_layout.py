"""Learned event layouts: how one stream's events look around the values that change.

vLLM writes every content chunk of a stream the same way; only the content string changes and,
with ``continuous_usage_stats``, the numbers in the usage object. A ``Layout`` keeps the bytes
before the content string (``pre``) and the constant pieces after it, split at the ``*_tokens``
numbers (plain digits, at most 15). The meter learns one from the first content event and reads
later events from these slots alone, without ``json.loads``: ``Layout.read`` for single events,
and a compiled pattern (``Layout.compiled``, shared by streams) once the layout has repeated.

A layout is kept only if it is proved. The event is parsed with a sentinel in the string slot
and distinct sentinel numbers in the number slots; the content must come out as the sentinel,
and each usage field is then either a sentinel (fed by that slot) or a constant. Another JSON
string body in the string slot, or another plain digit run in a number slot, keeps every token
of the document in place, so any event the pattern matches parses to the sentinel chunk with
its own values in place of the sentinels. A number slot is the value of a ``*_tokens`` key
outside any string, so it can feed nothing but usage. Pure, no I/O.
"""

from __future__ import annotations

import json
import re
from _json import scanstring
from collections.abc import Callable
from typing import NamedTuple

from monitor.meter_chunks import Chunk

__all__ = ["Layout", "find_string", "learn_layout", "read_string"]

# One JSON string body (without quotes). Possessive, so a damaged event fails in linear time.
_STRING = rb'((?:[^"\\\x00-\x1f]++|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*+)'
# At most 15 digits: int() stays cheap and json.loads would refuse numbers past 4,300 digits.
_MAX_DIGITS = 15
_NUMBER = rb"(?:0|[1-9][0-9]{0,%d})" % (_MAX_DIGITS - 1)
_STRING_RE, _NUMBER_RE = re.compile(_STRING), re.compile(_NUMBER)
_USAGE_NUMBER = re.compile(rb'"(?:prompt|total|completion)_tokens"\s*:\s*([0-9]+)')
_MAX_SLOTS = 6
_TEXT_SENTINEL = "\x7fllm-monitor-slot\x7f"
# Compiled patterns by (pieces, captured slots); vLLM's pieces hold no per-stream bytes (ids sit in pre).
_PATTERNS: dict[tuple[tuple[bytes, ...], tuple[bool, ...]], re.Pattern[bytes]] = {}
_MAX_PATTERNS = 64
_INT_SENTINEL = 7_046_309_000_000_001  # 19 digits: no usage number a real server sends


class Layout(NamedTuple):
    """One learned event shape: ``pre``, a string body, then ``pieces`` with a number between each two."""

    pre: bytes  # the event up to its content string body, "data:" included
    pieces: tuple[bytes, ...]  # the bytes after the string body, split at the number slots
    chunk: Chunk  # finish and stop reasons, and usage fields that no slot feeds
    prompt_slot: int  # the number slot holding prompt_tokens, -1 if none
    completion_slot: int

    @property
    def hot(self) -> bool:
        """A plain content event: no finish or stop reason; no usage, or completion_tokens from a slot."""
        c = self.chunk
        no_usage = c.usage is None and self.prompt_slot < 0
        return c.finish_reason is None and c.stop_reason is None and (self.completion_slot >= 0 or no_usage)

    def read(self, blk: bytes) -> Chunk | None:
        """The chunk of a whole one-line event (without its blank line), or None if it has another layout."""
        body = _STRING_RE.match(blk, len(self.pre)) if blk.startswith(self.pre) else None
        if body is None:
            return None
        pos, numbers = body.end(), []
        for piece in self.pieces[:-1]:
            number = _NUMBER_RE.match(blk, pos + len(piece)) if blk.startswith(piece, pos) else None
            if number is None:
                return None
            numbers.append(int(number[0]))
            pos = number.end()
        content = read_string(body[1]) if blk[pos:] == self.pieces[-1] else None
        if content is None:
            return None
        usage, ps, cs = self.chunk.usage, self.prompt_slot, self.completion_slot
        if ps >= 0 or cs >= 0:
            prompt, completion = usage or (None, None)
            usage = (numbers[ps] if ps >= 0 else prompt, numbers[cs] if cs >= 0 else completion)
        return Chunk(content, self.chunk.finish_reason, self.chunk.stop_reason, usage)

    def compiled(self, *, cached_only: bool = False) -> tuple[re.Pattern[bytes], int, int] | None:
        """The pattern for the meter's scan loop, with its prompt and completion groups (0: constant).

        It matches from the string body (group 1) through the blank line: the same events as ``read``.
        Compiling costs ~0.1 ms, so patterns are shared by streams; ``cached_only`` never compiles.
        """
        slots = range(len(self.pieces) - 1)
        captured = tuple(j in (self.prompt_slot, self.completion_slot) for j in slots)
        rest = _PATTERNS.get((self.pieces, captured))
        if rest is None:
            if cached_only:
                return None
            if len(_PATTERNS) >= _MAX_PATTERNS:
                del _PATTERNS[next(iter(_PATTERNS))]
            rest = _PATTERNS[self.pieces, captured] = _compile(self.pieces, captured)
        groups = [2 + sum(captured[:j]) if j >= 0 else 0 for j in (self.prompt_slot, self.completion_slot)]
        return rest, groups[0], groups[1]


def read_string(body: bytes) -> str | None:
    """Decode a string body that ``_STRING`` matched; None if it is not valid UTF-8."""
    try:
        if 0x5C in body:
            return scanstring((body + b'"').decode(), 0)[0]
        return body.decode()
    except UnicodeDecodeError:
        return None


def find_string(blk: bytes, marker: bytes) -> tuple[int, int] | None:
    """Start and end of the non-empty JSON string body that follows the first ``marker``."""
    a = blk.find(marker)
    if a < 0:
        return None
    a += len(marker)
    try:
        tail = blk[a:].decode()
        end = a + len(tail[: scanstring(tail, 0)[1] - 1].encode())  # the closing quote
    except ValueError:
        return None
    return (a, end) if end > a else None


def learn_layout(blk: bytes, a: int, end: int, interpret: Callable[[object], Chunk | None]) -> Layout | None:
    """Learn the layout of a one-line ``data:`` event whose content string body is ``blk[a:end]``.

    ``interpret`` turns a parsed event into its chunk, or None if it is not a chunk (an error).
    Costs one ``json.loads``; None if the layout cannot be proved.
    """
    pre, post = blk[:a], blk[end:]
    pieces: list[bytes] = []
    filled = b""  # post with a sentinel in each integer slot
    values: list[int] = []  # the sentinels
    last = 0
    for m in _USAGE_NUMBER.finditer(post) if b"_tokens" in post else ():
        start, stop = m.span(1)
        values.append(_INT_SENTINEL + len(values))
        digits = b"%d" % values[-1]
        if digits in blk or len(values) > _MAX_SLOTS:
            return None
        pieces.append(post[last:start])
        filled += post[last:start] + digits
        last = stop
    pieces.append(post[last:])
    head = pre[6:] if pre[5:6] == b" " else pre[5:]
    try:
        chunk = interpret(json.loads(head.decode() + _TEXT_SENTINEL + (filled + pieces[-1]).decode()))
    except (ValueError, RecursionError):
        return None
    if chunk is None or chunk.content != _TEXT_SENTINEL:
        return None
    usage, slots = chunk.usage, [-1, -1]
    if values:
        fields = list(usage or (None, None))
        slots = [values.index(v) if v is not None and v in values else -1 for v in fields]
        fields = [None if j >= 0 else v for j, v in zip(slots, fields, strict=True)]
        usage = None if fields == [None, None] else (fields[0], fields[1])
    return Layout(pre, tuple(pieces), Chunk("", chunk.finish_reason, chunk.stop_reason, usage), slots[0], slots[1])


def _compile(pieces: tuple[bytes, ...], captured: tuple[bool, ...]) -> re.Pattern[bytes]:
    regex = _STRING + re.escape(pieces[0])
    for piece, capture in zip(pieces[1:], captured, strict=True):
        regex += (b"(%s)" if capture else b"%s") % _NUMBER + re.escape(piece)
    return re.compile(regex + b"\n\n")
