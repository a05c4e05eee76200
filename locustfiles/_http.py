"""Reading one streamed reply from geventhttpclient into the meter, and classifying what went wrong.

Failures use the probe engine's kinds (``connect_error``, ``timeout``, ``http_error``,
``bad_response``, ``stream_error``, ``body_too_large``) plus ``check_failed``, so load results and
canary results read the same. As in the probes, every status is read here (an error body gives
its message), a redirect is an ``http_error``, and all server text goes through the request's
``monitor.untrusted.Untrusted``.

A pooled keep-alive connection that the server closed just as it was reused fails before any
response byte; ``closed_before_reply`` tells that apart, so the caller can retry on a fresh one.
"""

from __future__ import annotations

import re
import socket
import time
from typing import Any

from _selftime import CMSG_BYTES, ReplyTiming, StampedRead, kernel_time, queue_empty, stamp_socket, take_reads
from geventhttpclient.connectionpool import ConnectionPool
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError, HTTPSocketPoolResponse

from monitor.envelope import MAX_ERROR_BODY_BYTES, closed_mid_stream_detail, http_error_detail, redirect_detail
from monitor.meter import StreamMeter
from monitor.untrusted import Untrusted

RECV_BYTES = 65536
# Every status is a response to read: Locust's default list would drop the body of a 429 unread.
ALL_STATUS_CODES = frozenset(range(100, 600))
CHUNK_LINE_PEEK_BYTES = 32
_CHUNK_LINE = re.compile(rb"([0-9a-fA-F]{1,8})(?:;[^\r\n]*)?\r\n")


class Failure(Exception):
    """A classified failure: ``kind`` is a monitor.results ErrorKind or ``check_failed``."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def closed_before_reply(resp: Any) -> bool:
    """The server closed (or reset) the connection before sending a byte of the response."""
    error = getattr(resp, "error", None)
    return not resp.status_code and isinstance(error, HTTPConnectionClosed | ConnectionResetError | BrokenPipeError)


def drop_idle_connections(session: Any) -> None:
    """Close a FastHttpSession's pooled idle connections: when a server closes one idle connection, it
    closes the others that sat as long, so a retry must not pick one of them."""
    pools = getattr(getattr(session, "client", None), "clientpool", None)
    for client in getattr(pools, "clients", {}).values():
        queue = getattr(getattr(client, "_connection_pool", None), "_socket_queue", None)
        while queue is not None and not queue.empty():
            queue.get(block=False).close()  # idle sockets hold no semaphore slot: closing is enough


def read_reply(resp: Any, meter: StreamMeter, untrusted: Untrusted, max_body_bytes: int, timing: ReplyTiming) -> None:
    """Feed the body to ``meter`` read by read; raise Failure for transport and HTTP errors.

    Reads are stamped with the kernel's receive time where it can (``_selftime``), and ``timing`` gets
    each read's lag and each token event's error bound.
    """
    status = resp.status_code
    if not status:
        raise _transport_failure(getattr(resp, "error", None), untrusted, started=False, host=_host(resp))
    stream: HTTPSocketPoolResponse = resp.stream
    sock = stream._sock
    reads = take_reads(sock)
    # From now on this connection's header reads keep their kernel stamps, and so do the pool's new ones.
    if sock is not None:
        stamp_socket(sock)
    _stamp_new_connections(getattr(stream, "_pool", None))
    try:
        if 300 <= status < 400:
            _discard(stream)
            raise Failure("http_error", redirect_detail(status, resp.headers.get("location"), untrusted))
        if status >= 400:
            raise Failure("http_error", _http_detail(status, stream, untrusted))
        _read_body(stream, sock, reads, meter, untrusted, max_body_bytes, timing)
    finally:
        take_reads(sock)  # an error body read through the parser: not the next reply's header reads


def _read_body(
    stream: HTTPSocketPoolResponse,
    sock: Any,
    reads: list[StampedRead],
    meter: StreamMeter,
    untrusted: Untrusted,
    max_body_bytes: int,
    timing: ReplyTiming,
) -> None:
    # geventhttpclient's read(n) waits for n bytes; a token must be timed when it arrives, so
    # this loop receives from the socket itself and lets the response's parser de-chunk it.
    buf = stream._body_buffer
    kernel = sock is not None and stamp_socket(sock)
    try:
        received = _first_bytes(stream, sock, meter, timing, max_body_bytes, reads)
        # Until the first token, read one HTTP chunk at a time: the kernel then stamps the segment that ends
        # the chunk, not a later one, so the first token's time stays close even when the loop is late.
        exact = kernel and not received and str(stream.get("transfer-encoding") or "").lower() == "chunked"
        while not stream.message_complete:
            if sock is None:
                raise Failure("stream_error", "connection closed mid-stream")
            size = _chunk_bytes(sock.recv(CHUNK_LINE_PEEK_BYTES, socket.MSG_PEEK)) if exact else None
            exact = size is not None
            data, call_s, now_s, wall_s = _receive(sock, size or RECV_BYTES, kernel)
            if not data:
                cause = closed_mid_stream_detail("no [DONE]", ended_without_finish=meter.ended_without_finish)
                raise Failure("stream_error", cause)
            stamp_s = timing.stamp(now_s, wall_s)
            # The read emptied the receive queue, so the kernel's stamp is its last byte's (see _selftime).
            drained = len(data) < (size or RECV_BYTES) or (exact and queue_empty(sock))
            stream.feed(data)
            if buf:
                received = _count(received + len(buf), max_body_bytes)
                _feed(meter, timing, bytes(buf), stamp_s, kernel=wall_s is not None and drained)
                del buf[:]
            timing.advance(call_s, stamp_s, kernel=wall_s is not None, drained=drained)
            exact = exact and not meter.token_events  # after the first token, one read takes all there is
    except Failure:
        _discard(stream)
        raise
    except HTTPParseError as exc:
        _discard(stream)
        raise Failure("bad_response", f"invalid HTTP response: {untrusted.line(str(exc))}") from None
    except OSError as exc:  # socket.timeout is a TimeoutError, an OSError
        _discard(stream)
        raise _transport_failure(exc, untrusted, started=True) from None


def stamp_connections(session: Any, host: str) -> None:
    """Stamp every connection ``session`` (a FastHttpSession) opens to ``host``, its first one included.

    geventhttpclient makes a host's client, and its connection pool, on the first request to it; this
    makes it now, with the same arguments, so that the pool is stamped before that request goes out.
    """
    pools = getattr(getattr(session, "client", None), "clientpool", None)
    if pools is None or not host:
        return
    _stamp_new_connections(getattr(pools.get_client(host), "_connection_pool", None))


def _stamp_new_connections(pool: Any) -> None:
    """Make ``pool`` stamp each connection it opens from now on, before the first request goes out on it.

    ``after_connect`` is the pool's hook for socket options; it is set on this pool only, and left
    alone where a subclass or someone else already uses it.
    """
    if pool is None or "after_connect" in vars(pool) or type(pool).after_connect is not ConnectionPool.after_connect:
        return
    pool.after_connect = stamp_socket


def _first_bytes(
    stream: Any, sock: Any, meter: StreamMeter, timing: ReplyTiming, max_body_bytes: int, reads: list[StampedRead]
) -> int:
    """Time the header parser's reads and feed the body bytes its last read brought; their count.

    ``reads`` are the parser's reads if the connection was a StampedSocket when the request went out;
    otherwise the body bytes it read are stamped now, and their bound is ``now - lower_s``.
    """
    buf = stream._body_buffer
    # Anything before the request's start belongs to an earlier reply on this connection.
    reads = [read for read in reads if read.call_s >= timing.lower_s]
    received = 0
    for i, read in enumerate(reads):
        if read.empty_s is not None:
            timing.lower_s = max(timing.lower_s, read.empty_s)
        stamp_s = timing.stamp(read.now_s, read.wall_s)
        kernel = read.wall_s is not None
        if buf and i == len(reads) - 1:
            # Body bytes come only after the last header byte, so all of them came in the last read.
            received = _count(len(buf), max_body_bytes)
            _feed(meter, timing, bytes(buf), stamp_s, kernel=kernel and read.drained)
            del buf[:]
        timing.advance(read.call_s, stamp_s, kernel=kernel, drained=read.drained)
    if buf:
        received = _count(len(buf), max_body_bytes)
        _feed(meter, timing, bytes(buf), timing.stamp(time.perf_counter(), None), kernel=False)
        del buf[:]
    elif not received:
        # Nothing of the body is queued yet: all of it arrives after this moment.
        probe_s = time.perf_counter()
        if sock is not None and queue_empty(sock):
            timing.lower_s = max(timing.lower_s, probe_s)
    return received


def _feed(meter: StreamMeter, timing: ReplyTiming, data: bytes, stamp_s: float, *, kernel: bool) -> None:
    """Feed one read, telling apart the token event that ends at the read's last byte (exact) from earlier ones.

    ``kernel``: the stamp is the kernel's time for the read's last byte (a kernel stamp of a read that
    emptied the queue); otherwise no event of the read is exact.

    The read is fed in two parts, cut before its last event, when it ends an event (``\\n\\n``; a ``\\r``
    anywhere, or a leading ``\\n`` that may end an earlier event, and nothing counts as exact).
    """
    before = meter.token_events
    last_event = -1
    if kernel and data[-2:] == b"\n\n" and data[:1] != b"\n" and 13 not in data:
        last_event = data.rfind(b"\n\n", 0, len(data) - 2) + 2  # 1 (no earlier event end): the whole read
        if last_event > 1:
            meter.feed(data[:last_event], stamp_s)
        else:
            last_event = 0
    if last_event < 0:
        meter.feed(data, stamp_s)
        timing.tokens(meter.token_events - before, 0, stamp_s, kernel=kernel)
        return
    middle = meter.token_events
    if last_event:
        meter.feed(data[last_event:], stamp_s)
    else:
        meter.feed(data, stamp_s)
    after = meter.token_events
    # One event, so at most one token event ends at the last byte; more means a pending event ended too.
    exact = min(after - middle, 1)
    timing.tokens(after - before - exact, exact, stamp_s, kernel=kernel)


def _receive(sock: Any, size: int, kernel: bool) -> tuple[bytes, float, float, float | None]:
    """One read: (data, time before the call, time after it, the kernel's receive time or None)."""
    pc = time.perf_counter
    call_s = pc()
    if not kernel:
        data = sock.recv(size)
        return data, call_s, pc(), None
    data, ancdata, _, _ = sock.recvmsg(size, CMSG_BYTES)
    return data, call_s, pc(), kernel_time(ancdata)


def _chunk_bytes(head: bytes) -> int | None:
    """The bytes of the HTTP chunk that ``head`` (peeked) starts: size line, data, CRLF; None if unclear."""
    match = _CHUNK_LINE.match(head)
    if match is None:
        return None
    size = int(match[1], 16)
    total = match.end() + size + 2
    # The last chunk (0) may carry trailers: the end of the message is left to an ordinary read.
    return total if 0 < size and total < RECV_BYTES else None


def _count(received: int, max_body_bytes: int) -> int:
    if received > max_body_bytes:
        raise Failure("body_too_large", f"reply body exceeds max_body_bytes={max_body_bytes}")
    return received


def _discard(stream: HTTPSocketPoolResponse) -> None:
    """Close a half-read connection instead of handing it back to the pool."""
    pool, sock = getattr(stream, "_pool", None), stream._sock
    stream._sock = None
    if sock is not None:
        if pool is not None:
            pool.release_socket(sock)
        else:
            sock.close()


def _host(resp: Any) -> str:
    return str(getattr(getattr(getattr(resp, "request", None), "url_split", None), "host", "") or "?")


def _transport_failure(exc: BaseException | None, untrusted: Untrusted, *, started: bool, host: str = "?") -> Failure:
    text = untrusted.line(str(exc)) if exc is not None else "no response"
    if isinstance(exc, TimeoutError | socket.timeout):
        return Failure("timeout", "no data within the socket timeout" + (" (stream stalled)" if started else ""))
    if isinstance(exc, ConnectionRefusedError):
        return Failure("connect_error", "connection refused")
    if isinstance(exc, socket.gaierror):
        return Failure("connect_error", f"cannot resolve host {host!r}: {exc.strerror or text}")
    if started:
        return Failure("stream_error", f"connection lost mid-stream: {type(exc).__name__}: {text}")
    return Failure("connect_error", f"{type(exc).__name__}: {text}")


def _http_detail(status: int, stream: HTTPSocketPoolResponse, untrusted: Untrusted) -> str:
    try:
        raw = stream.read(MAX_ERROR_BODY_BYTES)
    except (OSError, HTTPParseError):
        raw = b""
    if not stream.message_complete:
        _discard(stream)
    return http_error_detail(status, raw, untrusted)
