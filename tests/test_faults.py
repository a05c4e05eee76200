"""Target faults, each provoked for real by the mock (or a closed port, or an unresolvable name).

Every probe must end within its timeout with the right classification; a daemon watching faulty
targets must keep its other probes on time; and 10,000 faulted probes must raise nothing and leave
the memory flat. "Within its timeout" is the requirement itself, so it is asserted (plus slack for
the loop and the mock process; both are generous bounds, not measurements).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from monitor.config import Settings, parse_settings
from monitor.probes import Prober
from monitor.results import ProbeResult
from monitor.store.db import connect
from monitor.store.repo import Store
from tests.conftest import chat_probe, completion_probe, one_probe
from tests.mockserver import MockProcess
from tests.test_daemon import daemon_config, run_daemon_in_task

# Loop scheduling and the mock's own timers: a probe may end this much after its deadline.
SLACK_S = 1.0
FAULTED_PROBES = 10_000
RSS_GROWTH_MAX_MB = 30.0


def _closed_port() -> int:
    # Bound and closed again: nothing listens there for the next instant (connection refused).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Fault:
    """One fault: how to provoke it and how the result must be classified."""

    knobs: dict[str, Any]  # mock config
    kind: str
    phase: str | None = None
    status: int | None = None
    target: dict[str, Any] = field(default_factory=dict)  # timeouts
    probe: dict[str, Any] = field(default_factory=dict)
    detail: str = ""  # a piece of error_detail
    base_url: str | None = None  # instead of the mock


FAULTS = {
    "connect-refused": Fault({}, "connect_error", base_url="closed", detail="Connection refused"),
    "dns-failure": Fault({}, "connect_error", base_url="http://no-such-host.invalid/v1", detail="no-such-host.invalid"),
    "timeout-before-headers": Fault(
        {"ttft_ms": 30_000}, "timeout", "first_byte", target={"first_byte_timeout_s": 0.5, "timeout_s": 10},
        probe={"stream": False}, detail="no response within 0.5 s (first byte)",
    ),
    "timeout-before-first-token": Fault(
        {"ttft_ms": 30_000}, "timeout", "first_byte", 200, target={"first_byte_timeout_s": 0.5, "timeout_s": 10},
    ),
    "stall-mid-stream": Fault(
        {"stall_after": 3}, "timeout", "gap", 200, target={"chunk_timeout_s": 0.5, "timeout_s": 10},
        detail="no data for 0.5 s between chunks",
    ),
    "disconnect-mid-stream": Fault({"disconnect_after": 3}, "stream_error", status=200, detail="mid-stream"),
    "malformed-sse": Fault({"malformed_rate": 1.0}, "bad_response", status=200, detail="malformed JSON"),
    "malformed-json-body": Fault(
        {"malformed_rate": 1.0}, "bad_response", status=200, probe={"stream": False}, detail="malformed JSON"
    ),
    "burst-429": Fault({"status": 429}, "http_error", status=429, detail="HTTP 429"),
    "burst-500": Fault({"status": 500}, "http_error", status=500, detail="HTTP 500 with an empty body"),
    "burst-503": Fault({"status": 503}, "http_error", status=503, detail="HTTP 503"),
    "error-event-mid-stream": Fault({"error_event_after": 3}, "stream_error", status=200),
    "drip-1-byte-per-s": Fault(
        {"drip_bytes_per_s": 1}, "timeout", "total", 200, target={"timeout_s": 2.5}, detail="timeout_s=2.5"
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(FAULTS))
async def test_fault_ends_within_its_timeout_and_is_classified(
    name: str, mock: MockProcess, probe_session: aiohttp.ClientSession
) -> None:
    fault = FAULTS[name]
    mock.configure(**fault.knobs)
    base_url = fault.base_url or mock.base_url
    if base_url == "closed":
        base_url = f"http://127.0.0.1:{_closed_port()}/v1"
    target, probe = one_probe(base_url, chat_probe(max_tokens=64, **fault.probe), **fault.target)
    started = time.monotonic()
    result = await Prober(probe_session).run(target, probe)
    wall_s = time.monotonic() - started

    assert (result.error_kind, result.timeout_phase, result.http_status) == (fault.kind, fault.phase, fault.status), (
        result.error_detail
    )
    assert fault.detail in (result.error_detail or ""), result.error_detail
    assert result.latency_ms is not None
    deadline_s = min(target.timeout_s, target.first_byte_timeout_s or target.timeout_s)
    if fault.phase == "gap":
        deadline_s = target.timeout_s  # a stall ends at the chunk timeout, well before the total
    assert result.latency_ms / 1000 <= deadline_s + SLACK_S
    assert wall_s <= deadline_s + SLACK_S
    if fault.phase is not None:  # the timeout that fired is the one configured, not a later one
        configured = {"first_byte": target.first_byte_timeout_s, "gap": target.chunk_timeout_s}
        bound_s = configured.get(fault.phase) or target.timeout_s
        assert bound_s <= wall_s + 0.05 and wall_s <= bound_s + SLACK_S


# --- the scheduler with faulty targets -------------------------------------------------------------


async def test_faulty_targets_do_not_stall_the_scheduler_or_delay_healthy_probes(
    mock: MockProcess, sqlite_db_url: str
) -> None:
    """A hung stream, a refused port and a DNS failure next to a healthy probe every 0.5 s."""
    with MockProcess(stall_after=1) as stalled:
        raw = daemon_config(
            mock.base_url, sqlite_db_url,
            chat_probe(name="healthy", interval_s=0.5, max_tokens=32),
            chat_probe(name="hung", target="stalled", interval_s=0.5),
            completion_probe(name="refused", target="closed", interval_s=0.5),
            completion_probe(name="dns", target="dns", interval_s=0.5),
            daemon={"shutdown_grace_s": 1, "max_concurrent_probes": 8},
        )  # fmt: skip
        raw["targets"] += [
            {"name": "stalled", "base_url": stalled.base_url, "timeout_s": 30, "chunk_timeout_s": 1.5},
            {"name": "closed", "base_url": f"http://127.0.0.1:{_closed_port()}/v1", "timeout_s": 5},
            {"name": "dns", "base_url": "http://no-such-host.invalid/v1", "timeout_s": 5},
        ]
        settings = parse_settings(raw)
        async with run_daemon_in_task(settings) as daemon:
            await asyncio.sleep(6.0)
            stats = daemon.scheduler.stats
            lateness_s = sorted(daemon.scheduler.lateness_s)
    counts = await _outcomes(sqlite_db_url)
    # About 12 healthy runs fit in 6 s at 0.5 s intervals; ask for well over half of them.
    assert counts[("healthy", None)] >= 8, counts
    assert not [k for k in counts if k[0] == "healthy" and k[1] is not None], counts
    assert counts[("refused", "connect_error")] >= 8 and counts[("dns", "connect_error")] >= 8, counts
    # The hung probe ends at its chunk timeout (1.5 s) and starts again: a few results, all timeouts.
    assert counts[("hung", "timeout")] >= 2, counts
    assert stats.skipped_busy >= 1  # the hung probe's own later runs, skipped while it hangs
    # Lateness of every run start (healthy and faulty probes alike): small, never seconds.
    assert lateness_s and lateness_s[-1] < 1.0, lateness_s[-5:]


async def _outcomes(db_url: str) -> Counter[tuple[str, str | None]]:
    engine = await connect(db_url)
    try:
        rows = await Store.from_engine(engine).recent_results(limit=1000)
    finally:
        await engine.dispose()
    return Counter((r.probe, r.error_kind) for r in rows)


# --- 10,000 faulted probes ----------------------------------------------------------------------------


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


FAST_FAULTS: tuple[tuple[dict[str, Any], set[str | None]], ...] = (
    ({"status": 500}, {"http_error"}),
    ({"malformed_rate": 1.0}, {"bad_response"}),
    # Closed before any token: a response cut short, or (if it came before the headers) no response.
    ({"disconnect_after": 0}, {"stream_error", "connect_error", "bad_response"}),
)


@pytest.mark.timeout(120)
async def test_ten_thousand_faulted_probes_raise_nothing_and_keep_memory_flat(
    mock: MockProcess, probe_session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    prober = Prober(probe_session)
    settings = _fast_settings(mock.base_url)
    kinds: Counter[str | None] = Counter()
    rss_after_warmup = 0.0
    try:
        done = 0
        for round_ in range(FAULTED_PROBES // 1000):
            knobs, allowed = FAST_FAULTS[round_ % len(FAST_FAULTS)]
            mock.reset()
            mock.configure(**knobs, record_timings=False)
            results = await _fire(prober, settings, 1000, concurrency=50)
            for r in results:
                assert r.error_kind in allowed, (knobs, r.error_kind, r.error_detail)
            kinds.update(r.error_kind for r in results)
            done += len(results)
            if done == 2000:
                rss_after_warmup = _rss_mb()
    finally:
        loop.set_exception_handler(previous)
    rss_end = _rss_mb()
    assert done == FAULTED_PROBES and sum(kinds.values()) == FAULTED_PROBES
    assert None not in kinds  # every one of them was classified as a failure
    assert unhandled == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text[-2000:]
    assert "Traceback" not in caplog.text
    # Flat: whatever the first 2,000 allocated (pools, caches) is not growing with the next 8,000.
    assert rss_end - rss_after_warmup < RSS_GROWTH_MAX_MB, (rss_after_warmup, rss_end)


def _fast_settings(base_url: str) -> Settings:
    return parse_settings(
        {
            "targets": [{"name": "mock", "base_url": base_url, "timeout_s": 10}],
            "probes": [chat_probe(name="s", max_tokens=16), chat_probe(name="n", max_tokens=16, stream=False)],
        }
    )


async def _fire(prober: Prober, settings: Settings, count: int, *, concurrency: int) -> list[ProbeResult]:
    limit = asyncio.Semaphore(concurrency)
    target = settings.targets[0]

    async def one(i: int) -> ProbeResult:
        async with limit:
            return await prober.run(target, settings.probes[i % len(settings.probes)])

    return list(await asyncio.gather(*(one(i) for i in range(count))))
