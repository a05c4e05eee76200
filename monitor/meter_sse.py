"""SSE framing for the stream meter: body reads in, runs of complete events out. Pure, no I/O.

A server may split an event across reads, end lines in ``\\r\\n`` or a bare ``\\r`` (even with the
``\\r`` and ``\\n`` in different reads), send ``: ping`` comments, ``event:``/``id:`` lines, multi-line
``data``, or one JSON object and no event at all when it ignored ``"stream": true``. ``EventFramer``
normalises line ends to ``\\n``, buffers the unfinished event, drops one past ``MAX_EVENT_BYTES``
without holding it, and keeps the raw reads until the first data event so a plain JSON body can
still be measured. What an event means is the subclass's business (``StreamMeter._scan``).
"""

from __future__ import annotations

from monitor.meter_measurement import MAX_EVENT_BYTES

__all__ = ["EventFramer", "data_field", "is_done"]


class EventFramer:
    """Cuts one response body into complete SSE events, or keeps it whole when it is one JSON document.

    Subclasses implement ``_scan`` (dispatch the complete events at the start of some bytes and
    return the unfinished rest), ``_oversized`` (an event past ``MAX_EVENT_BYTES`` was dropped) and
    ``_internal_error`` (a bug was caught: ``feed`` never raises).
    """

    __slots__ = ("_body_mode", "_dropping", "_held_cr", "_last_s", "_pending", "_pending_bytes", "_raw_reads")

    def __init__(self, *, stream: bool, start_s: float) -> None:
        self._body_mode = not stream  # the body is one JSON document, not events
        self._last_s = start_s  # the time of the latest read
        self._pending: list[bytes] = []  # non-stream: the body; stream: bytes of an unfinished event
        self._pending_bytes = 0  # len(b"".join(self._pending))
        self._held_cr = False  # a read ended in "\r": it may be half of "\r\n"
        self._dropping: bytes | None = None  # dropping an oversized event: its last byte seen so far
        self._raw_reads: list[bytes] | None = []  # kept until the first data event, for the plain-JSON fallback

    def feed(self, data: bytes, now_s: float) -> None:
        """Add one read of the body; never raises. Events completed by this read get ``now_s``."""
        try:
            self._last_s = now_s
            if self._body_mode:
                self._pending_bytes += len(data)
                if self._pending_bytes <= MAX_EVENT_BYTES:
                    self._pending.append(data)
                elif self._pending:
                    self._pending.clear()  # past the cap: the meter reports it, nothing is kept
                return
            if self._raw_reads is not None:
                self._raw_reads.append(data)
            if self._held_cr or 13 in data:  # int membership is a memchr, much cheaper than b"\r"
                data = self._to_lf(data)
            if self._dropping is not None:
                data = self._after_dropped(data)
            pending = self._pending
            if pending:
                # Joining only when an event can end keeps a long event in many reads linear.
                if b"\n\n" not in data and not (data[:1] == b"\n" and pending[-1][-1:] == b"\n"):
                    if data:
                        pending.append(data)
                        self._pending_bytes += len(data)
                        self._check_pending()
                    return
                pending.append(data)
                data = b"".join(pending)
                pending.clear()
            tail = self._scan(data, now_s)
            if tail:
                pending.append(tail)
                self._pending_bytes = len(tail)
                self._check_pending()
        except Exception as exc:  # a meter bug must not kill a probe or a Locust user
            self._internal_error("on a read", exc)

    def _scan(self, data: bytes, now_s: float) -> bytes:
        raise NotImplementedError

    def _oversized(self) -> None:
        raise NotImplementedError

    def _internal_error(self, where: str, exc: Exception) -> None:
        raise NotImplementedError

    def _unfinished_blocks(self) -> list[bytes]:
        """At the end of the body: what is left, cut at blank lines (the last block may lack its blank line)."""
        tail = b"".join(self._pending) + (b"\n" if self._held_cr else b"")
        self._pending.clear()
        return tail.split(b"\n\n")

    def _check_pending(self) -> None:
        """Drop the unfinished event once it is past ``MAX_EVENT_BYTES``, unless it is a plain JSON body."""
        if self._pending_bytes <= MAX_EVENT_BYTES + 1:  # + 1: the first "\n" of its end may be in
            return
        # A server that ignored "stream": true sends one JSON object and no blank line; the meter measures
        # it from _raw_reads, which max_body_bytes bounds. Once a data event was seen there is no such fallback.
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

    def _after_dropped(self, data: bytes) -> bytes:
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


def data_field(block: bytes) -> bytes | None:
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


def is_done(payload: bytes) -> bool:
    """The ``[DONE]`` sentinel that ends an OpenAI stream, with any whitespace around it."""
    return payload == b"[DONE]" or (len(payload) < 16 and payload.strip() == b"[DONE]")
