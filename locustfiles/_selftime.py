"""The load generator's own timing error: kernel receive stamps, per-read lag, per-token error bounds.

A Locust user stamps a token when its greenlet gets to run, which on a busy gevent loop can be tens
of ms after the data arrived. So each connection sets ``SO_TIMESTAMPNS`` and reads with ``recvmsg``:
the kernel says when it received the last segment of the read (``CLOCK_REALTIME``), converted here
to the ``perf_counter`` domain the meter uses. ``read lag`` = our stamp-taking time - that kernel time.

One read can hold several events, and the kernel stamps only its last byte. A token event that ends
at the end of its read's data is therefore exact (kernel precision); an earlier one arrived after
``lower_s`` (see ``ReplyTiming.advance``) and no later than the stamp, so ``stamp - lower_s`` bounds
its error. Without a kernel stamp (no ``recvmsg``/``SO_TIMESTAMPNS``) the stamp is the user-space
time and every token of the read gets ``stamp - lower_s``. Every bound is an upper bound on the
generator's error (kernel receive to stamp), never an estimate (docs/accuracy.md).

The HTTP header parser reads with plain ``recv``, and its last read can hold the first token. A
connection made a ``StampedSocket`` (``stamp_socket``) keeps each such read's kernel stamp as a
``StampedRead``, so those body bytes are timed like the reader's own reads.

``LoopLag`` is the second, cheaper signal: a greenlet that measures how late its own short sleeps wake.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import sys
import termios
import time
import weakref
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.socket

from monitor.loadtest.window import KEYS_PER_MS

# Python names the option only since 3.12 (?); its number is 35 on every Linux architecture but a few old ones.
SO_TIMESTAMPNS: int | None = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform == "linux" else None)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS  # Linux: the control message has the option's number
TIMESPEC = struct.Struct("qq")  # struct timespec: tv_sec, tv_nsec
CMSG_BYTES = socket.CMSG_SPACE(TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
LOOP_LAG_INTERVAL_S = 0.02
# An exact event's bound: the kernel stamps in ns, and converting it to perf_counter (two clock reads) costs µs.
EXACT_BOUND_MS = 0.01
# A reply's header reads: one or two; an error body read through the parser adds a few (dropped after the reply).
KEPT_READS = 16


class WallClock:
    """``time.time()`` to ``perf_counter`` seconds, from bracketed pairs of readings.

    A pair is trusted only when the two ``perf_counter`` reads around ``time.time()`` are close: a
    process preempted in between would shift every stamp converted with it by the preemption.
    """

    TIGHT_S = 20e-6

    def __init__(self) -> None:
        self.offset_s = min((self._pair() for _ in range(5)), key=lambda pair: pair[1])[0]

    @staticmethod
    def _pair() -> tuple[float, float]:
        before = time.perf_counter()
        wall_s = time.time()
        after = time.perf_counter()
        return wall_s - (before + after) / 2, after - before

    def to_perf(self, wall_s: float) -> float:
        offset_s, spread_s = self._pair()
        if spread_s <= self.TIGHT_S:
            self.offset_s = offset_s  # follows NTP's slewing of the wall clock
        return wall_s - self.offset_s


CLOCK = WallClock()


def enable_kernel_stamps(sock: Any) -> bool:
    """Ask the kernel to stamp this socket's reads; False where it cannot (no option, no recvmsg)."""
    if SO_TIMESTAMPNS is None or not CMSG_BYTES or not hasattr(sock, "recvmsg"):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def kernel_time(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    """The CLOCK_REALTIME seconds in a recvmsg's SCM_TIMESTAMPNS message, or None."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(data) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack_from(data)
            return float(sec) + float(nsec) * 1e-9
    return None


class ReplyTiming:
    """How one reply's reads were stamped, and the error bound of each token event.

    ``token_err_ms`` runs parallel to the meter's token events; ``ttft_bound_ms`` is the first one's.
    ``read_lag_ms`` holds one value per kernel-stamped read.
    """

    __slots__ = ("kernel_reads", "lower_s", "read_lag_ms", "reads", "token_err_ms")

    def __init__(self, start_s: float) -> None:
        # Nothing of the reply can have arrived before the request was sent.
        self.lower_s = start_s
        self.reads = 0
        self.kernel_reads = 0
        self.read_lag_ms: list[float] = []
        self.token_err_ms: list[float] = []

    @property
    def ttft_bound_ms(self) -> float | None:
        return self.token_err_ms[0] if self.token_err_ms else None

    @property
    def read_lag_max_ms(self) -> float | None:
        return max(self.read_lag_ms) if self.read_lag_ms else None

    def stamp(self, now_s: float, kernel_wall_s: float | None) -> float:
        """The time to give this read's events: the kernel's receive time in perf_counter seconds, else ``now_s``."""
        self.reads += 1
        if kernel_wall_s is None:
            return now_s
        stamp_s = min(now_s, CLOCK.to_perf(kernel_wall_s))
        self.kernel_reads += 1
        self.read_lag_ms.append((now_s - stamp_s) * 1000.0)
        return stamp_s

    def tokens(self, inexact: int, exact: int, stamp_s: float, *, kernel: bool) -> None:
        """Bounds for the token events of one read: ``inexact`` ended before its last byte, ``exact`` at it."""
        bound_ms = max(0.0, (stamp_s - self.lower_s) * 1000.0)
        if not kernel:  # a user-space stamp is late for every event of the read, the last one too
            inexact, exact = inexact + exact, 0
        self.token_err_ms.extend([max(bound_ms, EXACT_BOUND_MS)] * inexact + [EXACT_BOUND_MS] * exact)

    def advance(self, call_s: float, stamp_s: float, *, kernel: bool, drained: bool) -> None:
        """After a read that emptied the receive queue (``drained``): the next read's data arrived later.

        Later than this read's copy, which began after ``call_s`` (the time just before the call), and
        than its last byte (the kernel stamp). After a read that filled its buffer nothing moves: TCP
        merges newly arrived data into the last queued segment and gives it the newest time, so a
        partial read's stamp may belong to data it left behind.
        """
        if drained:
            self.lower_s = max(self.lower_s, call_s, stamp_s if kernel else call_s)


def queue_empty(sock: Any) -> bool:
    """Nothing waits in this socket's receive queue (False when the platform cannot tell)."""
    try:
        queued: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    except (OSError, ValueError):
        return False
    return queued == 0


@dataclass(frozen=True, slots=True)
class StampedRead:
    """One plain ``recv`` on a ``StampedSocket`` (the HTTP header parser's), for ``read_reply`` to time.

    ``empty_s``: a moment before the call at which the receive queue was empty, so all the read's
    data arrived after it (None: the queue was not empty). ``drained``: the read returned less than
    it asked for, so the kernel stamp is its last byte's.
    """

    empty_s: float | None
    call_s: float
    now_s: float
    wall_s: float | None
    drained: bool


_READS: weakref.WeakKeyDictionary[Any, deque[StampedRead]] = weakref.WeakKeyDictionary()


class StampedSocket(gevent.socket.socket):  # type: ignore[misc]  # gevent has no type hints
    """A gevent socket whose plain ``recv`` reads with ``recvmsg`` and keeps the kernel's stamp.

    The bytes are the same; each read is recorded for ``take_reads``. A read with flags (a peek) is
    left alone. No slots of its own, so an open connection can become one (``stamp_socket``).
    """

    __slots__ = ()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if flags:
            return super().recv(bufsize, flags)  # type: ignore[no-any-return]
        pc = time.perf_counter
        check_s = pc()
        empty = queue_empty(self)
        call_s = pc()
        data, ancdata, _, _ = self.recvmsg(bufsize, CMSG_BYTES)
        read = StampedRead(check_s if empty else None, call_s, pc(), kernel_time(ancdata), len(data) < bufsize)
        reads = _READS.get(self)
        if reads is None:
            reads = _READS[self] = deque(maxlen=KEPT_READS)
        reads.append(read)
        return data  # type: ignore[no-any-return]


def stamp_socket(sock: Any) -> bool:
    """Make a plain gevent TCP connection a ``StampedSocket`` with kernel stamps on; False where it cannot.

    Only a plain socket: TLS (``gevent.ssl.SSLSocket``) has no ``recvmsg``, and its reads are not the
    kernel's segments anyway.
    """
    if type(sock) is StampedSocket:
        return True
    if type(sock) is not gevent.socket.socket or not enable_kernel_stamps(sock):
        return False
    sock.__class__ = StampedSocket  # the same layout, so only recv changes, for this connection alone
    return True


def take_reads(sock: Any) -> list[StampedRead]:
    """The plain reads recorded on ``sock`` since the last call, oldest first (none for another socket)."""
    reads = _READS.pop(sock, None) if type(sock) is StampedSocket else None
    return list(reads) if reads else []


class LoopLag:
    """This process's event-loop lag: how late a greenlet's ``LOOP_LAG_INTERVAL_S`` sleeps wake (10 µs keys)."""

    def __init__(self) -> None:
        self.hist: Counter[int] = Counter()
        self._greenlet: gevent.Greenlet[Any, Any] | None = None

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        pc, sleep = time.perf_counter, gevent.sleep
        while True:
            before = pc()
            sleep(LOOP_LAG_INTERVAL_S)
            self.hist[int(max(0.0, pc() - before - LOOP_LAG_INTERVAL_S) * 1000.0 * KEYS_PER_MS)] += 1

    def take(self) -> Counter[int]:
        """The histogram so far, reset (a worker ships it with each report)."""
        hist, self.hist = self.hist, Counter()
        return hist
