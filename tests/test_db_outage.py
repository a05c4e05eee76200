"""Database outages: the real PostgreSQL stopped under a running daemon, the writer's bounded buffer, refused rows.

The outage tests stop a PostgreSQL server, so they never touch the machine's main cluster (other
tests use it): each module run creates a throwaway cluster with Debian's `pg_createcluster` on a
free port, and drops it afterwards. That needs root and postgresql-common, as .ci/run has.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.config import parse_settings
from monitor.meter import StreamMeter
from monitor.results import ProbeResult
from monitor.store.db import connect, create_engine, ensure_schema
from monitor.store.repo import Store
from monitor.store.writer import ResultWriter
from tests.conftest import chat_probe, completion_probe
from tests.mockserver import MockProcess
from tests.test_daemon import count_results, daemon_config, run_daemon_in_task, wait_for

OUTAGE_S = 20.0  # the number
CLUSTER_TIMEOUT_S = 60.0


def _pg_version() -> str:
    versions = sorted(os.listdir("/etc/postgresql"), key=float) if os.path.isdir("/etc/postgresql") else []
    if not versions or shutil.which("pg_createcluster") is None or os.geteuid() != 0:
        pytest.fail(
            "the outage tests need Debian's pg_createcluster/pg_ctlcluster (postgresql-common) and root: they "
            "stop a throwaway PostgreSQL cluster, never the main one"
        )
    return versions[-1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    """A throwaway PostgreSQL cluster that tests may stop and start."""

    version: str
    name: str
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def fresh_database(self) -> str:
        """The URL of a new empty database on this cluster (each test gets its own)."""
        name = f"t{uuid.uuid4().hex[:12]}"
        create = ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", f'CREATE DATABASE "{name}"']
        subprocess.run(create, check=True, capture_output=True, timeout=CLUSTER_TIMEOUT_S)
        return self.url(name)

    def _ctl(self, action: str) -> list[str]:
        mode = ["-m", "fast"] if action == "stop" else []
        return ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action, *mode]

    def run(self, action: str) -> None:
        subprocess.run(self._ctl(action), check=True, capture_output=True, timeout=CLUSTER_TIMEOUT_S)

    async def control(self, action: str) -> None:
        """`start` or `stop` without blocking the event loop (the daemon under test shares it)."""
        proc = await asyncio.create_subprocess_exec(
            *self._ctl(action), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        async with asyncio.timeout(CLUSTER_TIMEOUT_S):
            out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode(errors="replace")


@pytest.fixture(name="cluster", scope="module")
def fix_cluster() -> Iterator[Cluster]:
    version = _pg_version()
    cluster = Cluster(version, f"llmmon_outage_{os.getpid()}", _free_port())
    create = ["pg_createcluster", version, cluster.name, "-p", str(cluster.port), "--", "--auth=trust"]
    subprocess.run(create, check=True, capture_output=True, timeout=CLUSTER_TIMEOUT_S)
    try:
        cluster.run("start")
        yield cluster
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version, cluster.name], capture_output=True, timeout=60)


@pytest.fixture(name="running_cluster")
def fix_running_cluster(cluster: Cluster) -> Cluster:
    """The cluster, started if an earlier test left it stopped."""
    subprocess.run(cluster._ctl("start"), capture_output=True, timeout=CLUSTER_TIMEOUT_S)
    return cluster


@pytest.fixture(name="outage_db_url")
def fix_outage_db_url(running_cluster: Cluster) -> str:
    return running_cluster.fresh_database()


def _result(i: int, *, probe: str = "p", body: bytes | None = None) -> ProbeResult:
    """A result measured by the real meter from `body` (a short healthy stream by default)."""
    meter = StreamMeter("chat", stream=True, start_s=0.0)
    meter.feed(body or b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n', 0.05)
    started_at = datetime(2026, 11, 20, tzinfo=UTC) + timedelta(seconds=i)
    base = ProbeResult(probe=probe, target="t", endpoint="chat", stream=True, started_at=started_at, max_tokens=None)
    return replace(base, http_status=200, measurement=meter.finish(0.1))


def _absurd(result: ProbeResult) -> ProbeResult:
    assert result.measurement is not None
    return replace(result, measurement=replace(result.measurement, completion_tokens=10**25))


async def _stored_probes(engine: AsyncEngine) -> list[str]:
    rows = await Store.from_engine(engine).recent_results(limit=1000)
    return [r.probe for r in sorted(rows, key=lambda r: r.id)]


def _messages(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if needle in r.getMessage()]


@pytest.mark.postgres
async def test_a_full_outage_buffer_drops_the_oldest_counts_and_logs_once(
    running_cluster: Cluster, outage_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="monitor")
    engine = await connect(outage_db_url)
    try:
        await ensure_schema(engine)
        writer = ResultWriter(Store.from_engine(engine), buffer_max=20, retry_initial_s=0.1, retry_max_s=0.5)
        task = asyncio.create_task(writer.run())
        for i in range(5):
            await writer.put(_result(i, probe=f"before{i}"))
        await wait_for(lambda: writer.stored == 5, what="five results before the outage")

        await running_cluster.control("stop")
        for i in range(50):
            await writer.put(_result(100 + i, probe=f"during{i}"))
        await wait_for(lambda: writer.outage and writer.overflowed == 30, what="an outage with 30 dropped")
        # Bounded: never more than buffer_max results held, and probes were never blocked by put().
        assert writer.buffered == 20 and writer.qsize() == 20 and writer.dropped == 30
        await asyncio.sleep(1.0)  # a few more failed retries: still one error line, nothing more dropped
        assert writer.overflowed == 30 and writer.buffered == 20

        await running_cluster.control("start")
        await wait_for(lambda: writer.stored == 25 and writer.qsize() == 0, timeout_s=20, what="the buffer flushed")
        assert not writer.outage
        await writer.close()
        await asyncio.wait_for(task, 10)
        # The newest twenty survived, in the order they were produced.
        assert await _stored_probes(engine) == [f"before{i}" for i in range(5)] + [f"during{i}" for i in range(30, 50)]
    finally:
        await engine.dispose()
    assert len(_messages(caplog, "database unavailable, buffering up to 20 results")) == 1
    assert len(_messages(caplog, "outage buffer full (20 results")) == 1
    (back,) = _messages(caplog, "database back after")
    assert "writing 20 buffered results (30 dropped by the outage buffer in total)" in back
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"


@pytest.mark.postgres
@pytest.mark.timeout(150)
async def test_daemon_survives_a_20_s_postgres_outage_and_stores_every_probe(
    running_cluster: Cluster, outage_db_url: str, mock: MockProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped for 20 s mid-run: readyz says so, results wait in the buffer, and afterwards rows == probes fired.

    On PostgreSQL the daemon is also a lease holder: it keeps leading (and probing) for two thirds
    of `daemon.lease_ttl_s` without the database, then steps down until the database answers again.
    """
    caplog.set_level(logging.INFO, logger="monitor")
    url = outage_db_url
    raw = daemon_config(
        mock.base_url, url, chat_probe(interval_s=0.5, max_tokens=64), completion_probe(interval_s=0.5, max_tokens=8)
    )
    settings = parse_settings(raw)
    assert settings.daemon.outage_buffer_max == 5000  # the documented default; 20 s of two probes is ~80
    async with run_daemon_in_task(settings) as daemon, aiohttp.ClientSession() as http:
        api = str(daemon.api_url)
        await wait_for(lambda: _at_least(url, 4), what="four results before the outage")

        await running_cluster.control("stop")
        stopped_at = time.monotonic()
        fired_at_stop = await _fired(http, api)
        status, body = await _get(http, api + "/readyz")
        assert status == 503 and body["ready"] is False, body
        assert body["checks"]["database"].startswith("cannot reach database"), body
        assert (await _get(http, api + "/healthz"))[0] == 200
        depths, fired = [], []
        while time.monotonic() - stopped_at < OUTAGE_S:
            depths.append(await _queue_depth(http, api))
            fired.append(await _fired(http, api) - fired_at_stop)
            assert (await _get(http, api + "/readyz"))[0] == 503
            await asyncio.sleep(1.0)
        # Probes went on without the database, and their results waited in the buffer.
        assert fired[-1] >= 8 and max(depths) >= 8, (fired, depths)

        await running_cluster.control("start")
        await wait_for(lambda: _ready(http, api), timeout_s=45, what="/readyz 200 after the restart")
        await wait_for(lambda: _flushed(http, api), timeout_s=30, what="the outage buffer flushed")
    summary = daemon.summary
    assert summary is not None
    assert summary.dropped == 0, summary
    # Every probe that finished was stored (a run cancelled by a step-down never produced a result).
    assert summary.stored == summary.runs - summary.cancelled == sum(daemon.metrics.results.values.values())
    assert await count_results(url) == summary.stored
    assert len(_messages(caplog, "database unavailable, buffering up to 5000 results")) == 1
    assert len(_messages(caplog, "database back after")) == 1
    assert not [r for r in caplog.records if r.exc_info], "a database outage logs one-line errors, no tracebacks"


async def _fired(http: aiohttp.ClientSession, api: str) -> float:
    """Probe results the daemon produced so far (its results counter, whatever became of them)."""
    async with http.get(api + "/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        if family.name == "llm_monitor_probe_results":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    return 0.0


async def _at_least(url: str, n: int) -> bool:
    return await count_results(url) >= n


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        return resp.status, await resp.json()


async def _ready(http: aiohttp.ClientSession, api: str) -> bool:
    return (await _get(http, api + "/readyz"))[0] == 200


async def _queue_depth(http: aiohttp.ClientSession, api: str) -> float:
    async with http.get(api + "/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        if family.name == "llm_monitor_write_queue_depth":
            return float(family.samples[0].value)
    raise AssertionError("no llm_monitor_write_queue_depth in /metrics")


async def _flushed(http: aiohttp.ClientSession, api: str) -> bool:
    return await _queue_depth(http, api) == 0


async def test_a_refused_result_is_dropped_alone_and_the_writer_goes_on(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """10^25 completion tokens: SQLite cannot bind it, PostgreSQL's INTEGER refuses it.

    The meter no longer believes such a usage (it used to, and this killed the writer on SQLite), so
    the count is set by hand: whatever the next such value is, the writer must survive it.
    """
    engine = await connect(db_url)
    try:
        await ensure_schema(engine)
        writer = ResultWriter(Store.from_engine(engine))
        task = asyncio.create_task(writer.run())
        for i in range(7):
            await writer.put(_absurd(_result(i, probe=f"bad{i}")) if i in (2, 5) else _result(i, probe=f"ok{i}"))
        await writer.close()
        await asyncio.wait_for(task, 20)
        assert (writer.stored, writer.rejected, writer.dropped, writer.overflowed) == (5, 2, 2, 0)
        assert await _stored_probes(engine) == ["ok0", "ok1", "ok3", "ok4", "ok6"]
    finally:
        await engine.dispose()
    refused = _messages(caplog, "the database refused it")
    assert [m.split(" started at")[0] for m in refused] == [
        "dropped the result of probe bad2",
        "dropped the result of probe bad5",
    ]
    assert not _messages(caplog, "database unavailable")  # a refused row is not an outage


async def test_stopping_during_an_outage_counts_what_is_lost(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on port 1: every write is refused, like a database that never comes back.
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    try:
        writer = ResultWriter(Store.from_engine(engine), retry_initial_s=0.05, retry_max_s=0.1)
        task = asyncio.create_task(writer.run())
        for i in range(3):
            await writer.put(_result(i))
        await wait_for(lambda: writer.outage, what="the outage")
        await writer.put(_result(3))  # buffered directly: put() never waits during an outage
        await writer.close()
        await asyncio.sleep(0.3)
        assert not task.done()  # closing waits for the database (the daemon bounds this by its grace)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await engine.dispose()
    assert (writer.stored, writer.dropped, writer.qsize()) == (0, 4, 0)
    assert _messages(caplog, "4 results were not written: the writer was stopped")


async def test_stopping_while_a_write_hangs_counts_that_batch_as_lost(caplog: pytest.LogCaptureFixture) -> None:
    # A listener that accepts and never answers: a hung database, not a refused one. The write is in
    # progress when the writer is stopped, so its batch is neither queued nor buffered.
    accepted: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda _, w: accepted.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/none")
    try:
        writer = ResultWriter(Store.from_engine(engine))
        task = asyncio.create_task(writer.run())
        for i in range(3):
            await writer.put(_result(i))
        await wait_for(lambda: bool(accepted), what="the write to connect")
        assert writer.buffered == 3 and not writer.outage
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await engine.dispose()
        for w in accepted:
            w.close()
        server.close()
    assert (writer.stored, writer.dropped, writer.qsize()) == (0, 3, 0)
    assert _messages(caplog, "3 results were not written: the writer was stopped")
