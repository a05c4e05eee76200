"""A daemon held off its core must not blame its target: the loop-lag watch and the scheduler's voided runs.

The real case: on a machine whose cores are busy (a CI runner beside a real inference server, a
laptop compiling) the daemon's process may not run for seconds. Every deadline that passed meanwhile
fires the moment it runs again, so a probe whose reply sat in the socket all along reads as a
timeout, and a consecutive-failures rule pages someone about a healthy server. Here the daemon is a
real `python -m monitor run` process, stopped with SIGSTOP while its probe waits on the real mock.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from monitor.loop_lag import STALL_MIN_S, LoopLag
from monitor.store.db import connect
from monitor.store.models import ProbeResultRow
from tests.conftest import chat_probe
from tests.mockserver import MockProcess
from tests.receivers import WebhookReceiver
from tests.test_crash import child
from tests.test_daemon import daemon_config, wait_for

STOP_S = 4.0  # twice the target's timeout
TIMEOUT_S = 2
RULE = {"name": "chat-failing", "kind": "consecutive_failures", "count": 1, "scope": {"probe": "chat"}}


def test_a_recorded_stall_counts_for_what_it_overlapped() -> None:
    lag = LoopLag()
    lag.observe(0.5, now_s=10.0)  # the loop ran nothing from 9.5 to 10.0
    lag.observe(STALL_MIN_S / 2, now_s=10.4)  # noise: not kept as a stall
    assert lag.worst_s(9.0, now_s=11.0) == 0.5
    assert lag.worst_s(9.8, now_s=11.0) == pytest.approx(0.2)  # only the part after the run began held it up
    assert lag.worst_s(10.1, now_s=11.0) == 0.0  # over before the run began
    assert lag.worst_ever_s == 0.5


async def test_a_stall_still_going_on_is_seen_before_the_ticker_runs_again() -> None:
    lag = LoopLag(tick_s=0.05)
    stop = asyncio.Event()
    ticker = asyncio.create_task(lag.run(stop))
    try:
        await asyncio.sleep(0.2)
        start_s = time.monotonic()
        time.sleep(0.5)  # noqa: ASYNC251 (the point: this loop is held, as a stopped process is)
        # Nothing else has run in this loop yet, the ticker neither: the stall is seen as it ends.
        assert lag.worst_s(start_s) >= 0.4
        await asyncio.sleep(0.1)
        assert lag.worst_s(start_s) >= 0.4  # and once the ticker has run, as a recorded stall
    finally:
        stop.set()
        await ticker


def _running(mock: MockProcess) -> int:
    with urllib.request.urlopen(mock.root_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(r"^vllm:num_requests_running(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    assert match is not None, text[:500]
    return int(float(match.group(1)))


async def _in_flight(mock: MockProcess) -> None:
    """Until the mock holds a request (it waits ``ttft_ms`` before its first token)."""
    await wait_for(lambda: asyncio.to_thread(_running, mock), timeout_s=20, what="a probe in flight at the mock")


@pytest.mark.timeout(120)
async def test_a_stopped_daemon_voids_its_runs_and_raises_no_alert(
    mock: MockProcess, sqlite_db_url: str, tmp_path: Path
) -> None:
    mock.configure(ttft_ms=1000)  # well inside the 2 s timeout: the server is healthy
    async with WebhookReceiver() as hook:
        raw = daemon_config(
            mock.base_url, sqlite_db_url, chat_probe(interval_s=1, max_tokens=512), rules=[RULE],
            receivers=[{"name": "ops", "url": hook.url, "format": "generic"}],
            daemon={"shutdown_grace_s": 5, "absence_eval_interval_s": 1},
        )  # fmt: skip
        raw["targets"][0]["timeout_s"] = TIMEOUT_S
        config = tmp_path / "monitor.yaml"
        config.write_text(yaml.safe_dump(raw), encoding="utf-8")
        async with child("run", "-c", str(config), cwd=tmp_path) as daemon:
            await daemon.line("llm-monitor daemon running")
            for _ in range(2):
                await _in_flight(mock)
                os.kill(daemon.proc.pid, signal.SIGSTOP)
                try:
                    await asyncio.sleep(STOP_S)  # the probe's deadline passes while the daemon cannot run
                finally:
                    os.kill(daemon.proc.pid, signal.SIGCONT)
                await asyncio.sleep(3)  # a few more runs, and alert evaluations, after the stall
            assert await daemon.finish(signal.SIGTERM) == 0, daemon.output[-3000:]

    engine = await connect(sqlite_db_url, connect_retries=0)
    try:
        async with engine.connect() as conn:
            kinds = (await conn.execute(select(ProbeResultRow.error_kind))).scalars().all()
    finally:
        await engine.dispose()
    assert len(kinds) >= 4
    assert [kind for kind in kinds if kind is not None] == []  # no timeout blamed on the target
    assert [r.json["alert"] for r in hook.received] == []  # nobody was paged
    output = daemon.output
    assert "Traceback" not in output
    stalled = re.findall(r"probe chat: this daemon's event loop stalled (\d+\.\d) s", output)
    assert stalled and all(float(s) >= STOP_S - 1 for s in stalled), output[-3000:]
    summary = re.search(r"(\d+) voided \(this daemon stalled\)", output)
    assert summary is not None and int(summary.group(1)) >= 2, output[-2000:]
