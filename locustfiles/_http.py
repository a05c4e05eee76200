"""Reading one streamed reply from geventhttpclient into the meter, and classifying what went wrong.

Failures use the probe engine's kinds (``connect_error``, ``timeout``, ``http_error``,
``bad_response``, ``stream_error``) plus ``check_failed``, so load results and canary results
read the same.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from geventhttpclient.response import HTTPParseError, HTTPSocketPoolResponse

from monitor.envelope import MAX_ERROR_BODY_BYTES, http_error_detail, one_line
from monitor.meter import StreamMeter

RECV_BYTES = 65536


class Failure(Exception):
    """A classified failure: ``kind`` is a monitor.results ErrorKind or ``check_failed``."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def read_reply(resp: Any, meter: StreamMeter) -> None:
    """Feed the body to ``meter`` read by read; raise Failure for transport and HTTP errors."""
    status = resp.status_code
    if not status:
        raise _transport_failure(getattr(resp, "error", None), started=False)
    stream: HTTPSocketPoolResponse = resp.stream
    if status >= 400:
        raise Failure("http_error", _http_detail(status, stream))
    pc = time.perf_counter
    # geventhttpclient's read(n) waits for n bytes; a token must be timed when it arrives, so
    # this loop receives from the socket itself and lets the response's parser de-chunk it.
    buf = stream._body_buffer
    if buf:
        meter.feed(bytes(buf), pc())
        del buf[:]
    sock = stream._sock
    try:
        while not stream.message_complete:
            if sock is None:
                raise Failure("stream_error", "connection closed mid-stream")
            data = sock.recv(RECV_BYTES)
            now_s = pc()
            if not data:
                raise Failure("stream_error", "connection closed mid-stream (no [DONE])")
            stream.feed(data)
            if buf:
                meter.feed(bytes(buf), now_s)
                del buf[:]
    except Failure:
        _discard(stream)
        raise
    except HTTPParseError as exc:
        _discard(stream)
        raise Failure("bad_response", f"invalid HTTP response: {one_line(str(exc))}") from None
    except OSError as exc:  # socket.timeout is a TimeoutError, an OSError
        _discard(stream)
        raise _transport_failure(exc, started=True) from None


def _discard(stream: HTTPSocketPoolResponse) -> None:
    """Close a half-read connection instead of handing it back to the pool."""
    pool, sock = getattr(stream, "_pool", None), stream._sock
    stream._sock = None
    if sock is not None:
        if pool is not None:
            pool.release_socket(sock)
        else:
            sock.close()


def _transport_failure(exc: BaseException | None, *, started: bool) -> Failure:
    text = one_line(str(exc)) if exc is not None else "no response"
    if isinstance(exc, TimeoutError | socket.timeout):
        return Failure("timeout", "no data within the socket timeout" + (" (stream stalled)" if started else ""))
    if isinstance(exc, ConnectionRefusedError):
        return Failure("connect_error", "connection refused")
    if isinstance(exc, socket.gaierror):
        return Failure("connect_error", f"cannot resolve host: {text}")
    if started:
        return Failure("stream_error", f"connection lost mid-stream: {type(exc).__name__}: {text}")
    return Failure("connect_error", f"{type(exc).__name__}: {text}")


def _http_detail(status: int, stream: HTTPSocketPoolResponse) -> str:
    try:
        raw = stream.read(MAX_ERROR_BODY_BYTES)
    except (OSError, HTTPParseError):
        raw = b""
    if not stream.message_complete:
        _discard(stream)
    return http_error_detail(status, raw)
