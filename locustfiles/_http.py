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

import socket
import time
from typing import Any

from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError, HTTPSocketPoolResponse

from monitor.envelope import MAX_ERROR_BODY_BYTES, closed_mid_stream_detail, http_error_detail, redirect_detail
from monitor.meter import StreamMeter
from monitor.untrusted import Untrusted

RECV_BYTES = 65536
# Every status is a response to read: Locust's default list would drop the body of a 429 unread.
ALL_STATUS_CODES = frozenset(range(100, 600))


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


def read_reply(resp: Any, meter: StreamMeter, untrusted: Untrusted, max_body_bytes: int) -> None:
    """Feed the body to ``meter`` read by read; raise Failure for transport and HTTP errors."""
    status = resp.status_code
    if not status:
        raise _transport_failure(getattr(resp, "error", None), untrusted, started=False, host=_host(resp))
    stream: HTTPSocketPoolResponse = resp.stream
    if 300 <= status < 400:
        _discard(stream)
        raise Failure("http_error", redirect_detail(status, resp.headers.get("location"), untrusted))
    if status >= 400:
        raise Failure("http_error", _http_detail(status, stream, untrusted))
    received = 0
    pc = time.perf_counter
    # geventhttpclient's read(n) waits for n bytes; a token must be timed when it arrives, so
    # this loop receives from the socket itself and lets the response's parser de-chunk it.
    buf = stream._body_buffer
    sock = stream._sock
    try:
        if buf:
            received = _count(len(buf), max_body_bytes)
            meter.feed(bytes(buf), pc())
            del buf[:]
        while not stream.message_complete:
            if sock is None:
                raise Failure("stream_error", "connection closed mid-stream")
            data = sock.recv(RECV_BYTES)
            now_s = pc()
            if not data:
                cause = closed_mid_stream_detail("no [DONE]", ended_without_finish=meter.ended_without_finish)
                raise Failure("stream_error", cause)
            stream.feed(data)
            if buf:
                received = _count(received + len(buf), max_body_bytes)
                meter.feed(bytes(buf), now_s)
                del buf[:]
    except Failure:
        _discard(stream)
        raise
    except HTTPParseError as exc:
        _discard(stream)
        raise Failure("bad_response", f"invalid HTTP response: {untrusted.line(str(exc))}") from None
    except OSError as exc:  # socket.timeout is a TimeoutError, an OSError
        _discard(stream)
        raise _transport_failure(exc, untrusted, started=True) from None


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
