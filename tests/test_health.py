"""`llm-monitor check` against real /readyz endpoints (a tiny server answering as the daemon does)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from monitor.config import APISettings
from monitor.health import readyz_url


@pytest.fixture(name="readyz")
async def fix_readyz() -> AsyncIterator[tuple[str, dict[str, int]]]:
    state = {"status": 200}

    async def handler(request: web.Request) -> web.Response:
        ready = state["status"] == 200
        body = {"ready": ready, "checks": {"database": "ok" if ready else "down", "scheduler": "running"}}
        return web.json_response(body, status=state["status"])

    app = web.Application()
    app.router.add_get("/readyz", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/readyz", state
    finally:
        await runner.cleanup()


async def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "monitor", "check", *args], capture_output=True, text=True, timeout=60
    )


async def test_check_exit_codes(readyz: tuple[str, dict[str, int]]) -> None:
    url, state = readyz
    out = await _check("--url", url)
    assert out.returncode == 0 and out.stdout.startswith(f"ready: {url} (database: ok")
    state["status"] = 503
    out = await _check("--url", url)
    assert out.returncode == 1 and f"not ready: {url}: HTTP 503 (database: down" in out.stderr


async def test_check_without_a_daemon_is_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = await _check("--url", f"http://127.0.0.1:{port}/readyz", "--timeout-s", "2")
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert "Connection refused" in out.stderr


def test_readyz_url_reaches_a_wildcard_bind_over_loopback() -> None:
    assert readyz_url(APISettings(host="0.0.0.0", port=9464)) == "http://127.0.0.1:9464/readyz"
    assert readyz_url(APISettings(host="::1", port=1)) == "http://[::1]:1/readyz"
